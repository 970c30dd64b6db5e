"""vLLM in a container: launch it detached, wait until it serves, stop it gently.

Readiness is what a client sees: `GET /health` answers 200, then `GET /v1/models` lists the
model, both over HTTP from this machine to the head's management address. Meanwhile the
launcher's exit-status file and the container state are read on the node, so a vLLM that
dies while loading fails `start` at once, with its last log lines, instead of a 30-minute wait.
The launch itself is checked too: the container's user must be able to write the log
directory (checked in the foreground before the detached launch), and vLLM's pid must be
recorded within `LAUNCH_GRACE_S`. Each run's log is its own: the previous one is kept as
`vllm.log.1`, never shown as this run's.
With the native executor every node runs a rank of vLLM the same way (its own container, its
own log folder), so `probe` and `stop` take the container.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from dgxcluster.core import docker, endpoint, httpclient, naming
from dgxcluster.core.docker import indented, parse_state
from dgxcluster.core.endpoint import EndpointProbe, Getter
from dgxcluster.core.nodepaths import LOG_DIR, VLLM_EXIT, VLLM_LOG, VLLM_PID
from dgxcluster.core.progress import Progress, StatusThrottle
from dgxcluster.errors import CommandTimeout, ConnectError, StepError
from dgxcluster.facts import vllm_log
from dgxcluster.remote.command import shell
from dgxcluster.remote.connection import Connection
from dgxcluster.serving.plan import (
    CONTAINER_LOG_DIR,
    HEAD,
    LAUNCH_CHECK_EXIT,
    launch_check,
    model_id,
    serve_exec,
)

if TYPE_CHECKING:
    from dgxcluster.core.nodepaths import NodePaths
    from dgxcluster.inventory.schema import InventoryModel

TAIL_LINES = 40
POLL_S = 0.25
HTTP_TIMEOUT_S = 3.0
#: vLLM's pid must be in vllm.pid this long after the launch (the launcher writes it at once).
LAUNCH_GRACE_S = 15.0
#: A log that has not grown this long is shown as quiet in the waiting line. Never a failure:
#: vLLM can say nothing for minutes while it loads big weights or compiles.
QUIET_LOG_S = 60

_PROBE = (
    'printf "state=%s\\n" "$(docker inspect -f "{{.State.Status}} {{.State.ExitCode}}" "$1" '
    '2>/dev/null || echo absent)"; '
    f'printf "exit=%s\\n" "$(cat "$2/{VLLM_EXIT}" 2>/dev/null)"; '
    f'printf "ended=%s\\n" "$(date -r "$2/{VLLM_EXIT}" +%s.%N 2>/dev/null)"; '
    f'printf "pid=%s\\n" "$(cat "$2/{VLLM_PID}" 2>/dev/null)"; '
    f'printf "joined=%s\\n" "$(grep -c "$3" "$2/{VLLM_LOG}" 2>/dev/null)"; '
    f'printf "last=%s\\n" "$(tail -n 1 "$2/{VLLM_LOG}" 2>/dev/null)"; '
    f'if m=$(stat -c %Y "$2/{VLLM_LOG}" 2>/dev/null); then '
    'printf "age=%s\\n" "$(($(date +%s) - m))"; fi'
)

# Inside the head container: SIGTERM to vLLM (only if that pid really is vLLM), wait, SIGKILL.
_STOP = (
    f'p=$(cat "$1/{VLLM_PID}" 2>/dev/null) || {{ echo absent; exit 0; }}; '
    'grep -q vllm "/proc/$p/cmdline" 2>/dev/null || { echo absent; exit 0; }; '
    'kill -TERM "$p"; n=0; '
    'while kill -0 "$p" 2>/dev/null; do n=$((n+1)); '
    'if [ "$n" -gt "$2" ]; then kill -KILL "$p"; echo killed; exit 0; fi; sleep 0.2; done; '
    'echo stopped'
)


@dataclass(frozen=True)
class ServeProbe:
    container: docker.ContainerState
    exit_code: int | None
    pid: str
    last_line: str
    joined: bool = False  # a rank of the native executor: the process group formed
    ended_at: float | None = None  # when the exit status was written (the node's clock)
    #: Seconds since vllm.log last grew, by the node's clock (None: no log yet).
    log_age_s: int | None = None

    @property
    def process_alive(self) -> bool:
        return self.container.running and bool(self.pid) and self.exit_code is None


_FIELDS = ("state", "exit", "ended", "pid", "joined", "last", "age")


def parse_probe(text: str) -> ServeProbe:
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key in _FIELDS and key not in fields:
            fields[key] = value
    code = fields.get("exit", "").strip()
    joined = fields.get("joined", "").strip()
    try:
        ended: float | None = float(fields.get("ended", "").strip())
    except ValueError:
        ended = None
    return ServeProbe(
        container=parse_state(fields.get("state", "absent")),
        exit_code=int(code) if code.lstrip("-").isdigit() else None,
        pid=fields.get("pid", "").strip(),
        last_line=fields.get("last", "").strip(),
        joined=joined.isdigit() and int(joined) > 0,
        ended_at=ended,
        log_age_s=int(age) if (age := fields.get("age", "").strip()).isdigit() else None,
    )


def quiet_note(p: ServeProbe) -> str:
    """` (vllm.log quiet for 4m)` once the log has not grown for QUIET_LOG_S, else ''."""
    age = p.log_age_s
    if age is None or age < QUIET_LOG_S:
        return ""
    return f" ({VLLM_LOG} quiet for {age // 60}m)"


def probe(conn: Connection, inv: InventoryModel, paths: NodePaths,
          container: str | None = None) -> ServeProbe:
    """vLLM in `container` (default: the head's) and its files in the node's log folder."""
    name = container or naming.container_name(inv.cluster, HEAD)
    res = conn.run(shell(_PROBE, name, paths.log_dir, vllm_log.JOINED_GREP),
                   timeout=docker.QUICK_S)
    return parse_probe(res.stdout)


def clear_state(conn: Connection, paths: NodePaths) -> None:
    """Forget the previous vLLM's pid and exit status (a new head container has new pids),
    and keep its log aside as vllm.log.1: this run's log starts empty."""
    conn.run(clear_state_argv(paths), timeout=docker.QUICK_S).check()


def clear_state_argv(paths: NodePaths) -> list[str]:
    """`clear_state` as argv (also a step of the boot plan, `serving.persist`)."""
    return shell(f'rm -f "$1/{VLLM_PID}" "$1/{VLLM_EXIT}"; '
                 f'if [ -e "$1/{VLLM_LOG}" ]; then mv -f "$1/{VLLM_LOG}" "$1/{VLLM_LOG}.1"; fi',
                 paths.log_dir)


def launch(conn: Connection, inv: InventoryModel, paths: NodePaths) -> None:
    """Check that the container's user can write the log directory, then launch detached."""
    res = conn.run(launch_check(inv), timeout=60)
    if res.exit_code == LAUNCH_CHECK_EXIT:
        why = res.stderr.strip().splitlines()
        raise StepError("vllm", f"vLLM cannot start: the head container's user cannot write "
                        f"{CONTAINER_LOG_DIR} ({paths.log_dir} on the node): "
                        f"{'; '.join(why[-2:])}. Give that user write access to "
                        f"{paths.log_dir}, or run the container as the SSH user "
                        f"(container.extra_args --user)", conn.node)
    if res.ok:
        res = conn.run(serve_exec(inv), timeout=60)
    if not res.ok:
        raise StepError("vllm", f"docker exec failed: {(res.stderr or res.stdout).strip()}", conn.node)


def log_tail(conn: Connection, paths: NodePaths, lines: int = TAIL_LINES) -> str:
    res = conn.run(["tail", "-n", str(lines), paths.vllm_log],
                   timeout=docker.QUICK_S)
    return res.stdout.rstrip() if res.ok else f"(no log at {paths.vllm_log})"


def ready(inv: InventoryModel, get: Getter = httpclient.get) -> EndpointProbe:
    """What a client sees: /health 200, then /v1/models lists the served model."""
    return endpoint.probe(endpoint.base_url(inv), get, HTTP_TIMEOUT_S, model=model_id(inv))


def wait_ready(conn: Connection, inv: InventoryModel, paths: NodePaths, timeout_s: float,
               progress: Progress, get: Getter = httpclient.get,
               sleep: Callable[[float], None] = time.sleep,
               gate: Callable[[], bool] | None = None,
               launch_grace_s: float = LAUNCH_GRACE_S,
               clock: Callable[[], float] = time.monotonic) -> float:
    """Seconds until ready. Raises StepError('vllm-ready') with the log tail on failure.

    `gate` (called every round; it may raise) must also say True before this returns.
    No pid recorded `launch_grace_s` after the launch: vLLM never started; fail at once.
    """
    t0 = clock()
    live = StatusThrottle(progress)
    while True:
        gated = gate() if gate is not None else True
        state = ready(inv, get)
        if state.ready and gated:
            return clock() - t0
        why = state.error or state.state
        try:
            p = probe(conn, inv, paths)
        except CommandTimeout as exc:
            raise ConnectError(conn.node, f"stopped answering while vLLM loaded: {exc}") from None
        elapsed = clock() - t0
        if p.exit_code is not None:  # first: a native rank 0's container ends with its vLLM
            raise StepError("vllm-ready", f"vLLM exited with status {p.exit_code} after "
                            f"{elapsed:.0f}s; last {TAIL_LINES} lines of "
                            f"{paths.vllm_log}:\n{indented(log_tail(conn, paths))}",
                            conn.node)
        if not p.container.running:
            tail = docker.log_tail(conn, naming.container_name(inv.cluster, HEAD))
            raise StepError("vllm-ready", f"the head container stopped "
                            f"({p.container.status}); its last lines:\n{indented(tail)}", conn.node)
        if not p.pid and elapsed > launch_grace_s:
            raise StepError("vllm-ready", f"vLLM did not launch: no pid in "
                            f"{paths.sub(LOG_DIR, VLLM_PID)} {elapsed:.0f}s after the launch; "
                            f"{paths.vllm_log} says:\n{indented(log_tail(conn, paths))}",
                            conn.node)
        if elapsed > timeout_s:
            raise StepError("vllm-ready", f"vLLM not ready within {timeout_s:g}s ({why}); "
                            f"last {TAIL_LINES} lines of {paths.vllm_log}:\n"
                            f"{indented(log_tail(conn, paths))}", conn.node)
        phase = vllm_log.read_line(p.last_line)
        shown = f"{phase.detail}: {p.last_line[:80]}" if phase else p.last_line[:110]
        note = quiet_note(p)
        live.status(conn.node, p.last_line + note, f"vllm-ready: {elapsed:.0f}s{note}: {shown}")
        sleep(POLL_S)


def stop(conn: Connection, inv: InventoryModel, container: str | None = None) -> str:
    """Stop vLLM (in `container`, default the head's) gracefully; returns 'stopped', 'killed'
    or 'absent' (was not running)."""
    name = container or naming.container_name(inv.cluster, HEAD)
    ticks = int(inv.serve.stop_timeout_s / 0.2)
    res = conn.run(["docker", "exec", name, *shell(_STOP, CONTAINER_LOG_DIR, str(ticks))],
                   timeout=inv.serve.stop_timeout_s + 60)
    if not res.ok:
        if "is not running" in res.stderr or "No such container" in res.stderr:
            return "absent"
        if not docker.state(conn, name).running:
            return "stopped"  # a native rank's container ends with its vLLM, this exec too
        raise StepError("vllm-stop", f"could not signal vLLM: {res.stderr.strip()}", conn.node)
    out = res.stdout.strip().splitlines()
    return out[-1] if out else "absent"

