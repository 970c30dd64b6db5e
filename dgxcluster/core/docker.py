"""Docker operations on one node, shared by every capability (argv only, no shell strings).

Containers are found by the `dgxcluster.cluster` label, never by guessing names, so a
renamed head or a leftover from an older config is still found. Each call is bounded in
time (`QUICK_S`): a hung node is named, not waited on.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass

from dgxcluster.core import naming
from dgxcluster.errors import StepError
from dgxcluster.facts import docker_ps
from dgxcluster.remote.command import shell
from dgxcluster.remote.connection import Connection

#: Timeout for quick docker CLI calls (inspect, ps, logs); a hung node is named, not waited on.
QUICK_S = 30.0


def list_cluster(conn: Connection, cluster: str, step: str = "preflight") -> list[docker_ps.ContainerInfo]:
    """Every container (any state) labelled with this cluster on the node."""
    res = conn.run(docker_ps.command(naming.cluster_filter(cluster)), timeout=QUICK_S)
    if not res.ok:
        raise StepError(step, f"docker is not usable: {first_line(res.stderr or res.stdout)}",
                        conn.node)
    parsed = docker_ps.parse(res.stdout)
    if parsed.error:
        raise StepError(step, parsed.error, conn.node)
    return parsed.containers


def require_image(conn: Connection, ref: str, step: str) -> str:
    """The image ID of `ref` on the node; StepError saying why not (no docker, daemon down,
    image absent: build it first)."""
    res = conn.run(["docker", "image", "inspect", "--format", "{{.Id}}", ref], timeout=QUICK_S)
    if res.exit_code == 0:
        return res.stdout.strip()
    err = res.stderr.strip()
    if res.exit_code == 127:
        why = "docker is not installed here"
    elif "Cannot connect to the Docker daemon" in err or "docker.sock" in err:
        why = "the Docker daemon is not running here"
    else:
        why = f"image {ref} is not here: build it first (dgxcluster build)"
    raise StepError(step, why, node=conn.node)


@dataclass(frozen=True)
class ContainerState:
    status: str  # running | exited | created | ... | absent
    exit_code: int | None = None

    @property
    def running(self) -> bool:
        return self.status == "running"


def parse_state(text: str) -> ContainerState:
    """Parse `docker inspect -f '{{.State.Status}} {{.State.ExitCode}}'` (or "absent")."""
    parts = text.strip().split()
    if not parts or parts[0] == "absent":
        return ContainerState("absent")
    code = int(parts[1]) if len(parts) > 1 and parts[1].lstrip("-").isdigit() else None
    return ContainerState(parts[0], code)


def state(conn: Connection, name: str) -> ContainerState:
    res = conn.run(["docker", "inspect", "-f", "{{.State.Status}} {{.State.ExitCode}}", name],
                   timeout=QUICK_S)
    return parse_state(res.stdout) if res.ok else ContainerState("absent")


def log_tail(conn: Connection, name: str, lines: int = 20) -> str:
    """The container's last output lines (stdout and stderr), redacted by the transport."""
    res = conn.run(shell('docker logs --tail "$1" "$2" 2>&1', str(lines), name), timeout=QUICK_S)
    return res.stdout.rstrip()


def remove(conn: Connection, name: str, timeout: float = 60.0) -> bool:
    """Kill and remove the container; True if it existed."""
    res = conn.run(["docker", "rm", "-f", "-v", name], timeout=timeout)
    if res.ok:
        return True
    if "No such container" in res.stderr:
        return False
    raise StepError("remove", f"docker rm -f {name}: {first_line(res.stderr)}", conn.node)


#: A `docker run` the operator interrupted goes on on the node (closing its SSH channel does
#: not stop the docker CLI), and creates its container after a plain `rm -f` has run: wait
#: until no `docker run --name NAME` has been seen for 2 s in a row (bounded: 100 s), then
#: remove. Quiet for a while, not just absent once: an exec request sshd had already taken
#: may not have become a process yet when the rollback first looks.
_SETTLED_RM = ('n=0; q=0; while [ "$q" -lt 4 ] && [ "$n" -lt 200 ]; do '
               'if pgrep -f -- "--name $1( |$)" >/dev/null 2>&1; then q=0; else q=$((q+1)); fi; '
               'sleep 0.5; n=$((n+1)); done; exec docker rm -f -v "$1"')


def remove_settled(conn: Connection, name: str, timeout: float = 120.0) -> bool:
    """`remove`, once no `docker run --name NAME` is still in flight on the node (rollback)."""
    res = conn.run(shell(_SETTLED_RM, name), timeout=timeout)
    if res.ok:
        return True
    if "No such container" in res.stderr:
        return False
    raise StepError("remove", f"docker rm -f {name}: {first_line(res.stderr)}", conn.node)


def stop(conn: Connection, name: str, grace_s: int = 10) -> None:
    """SIGTERM (tini forwards it to `ray start --block`, which stops Ray), SIGKILL after grace."""
    res = conn.run(["docker", "stop", "-t", str(grace_s), name], timeout=grace_s + 60)
    if not res.ok and "No such container" not in res.stderr:
        raise StepError("stop", f"docker stop {name}: {first_line(res.stderr)}", conn.node)


def first_line(text: str) -> str:
    """The first non-blank line of a command's output (for one-line error messages)."""
    return next((ln.strip() for ln in text.splitlines() if ln.strip()), "(no output)")


def indented(text: str) -> str:
    """Command output (a log tail) quoted below a message line, four spaces in."""
    return textwrap.indent(text, "    ", lambda _line: True)
