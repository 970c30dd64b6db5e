"""Taking a cluster down, node by node: what `stop` does, what `start --restart` does first,
and how a failed `start` rolls back exactly what it created.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from dgxcluster.core import docker, naming
from dgxcluster.core.nodepaths import ENV_DIR, SUPERVISOR_STATE, VLLM_PID, NodePaths, home_relative
from dgxcluster.core.progress import Progress
from dgxcluster.core.session import Session
from dgxcluster.core.steps import Outcome, Status
from dgxcluster.errors import ConnectError, DgxClusterError, StepError
from dgxcluster.facts import docker_ps
from dgxcluster.facts.docker_ps import ContainerInfo
from dgxcluster.remote.command import shell
from dgxcluster.remote.connection import Connection
from dgxcluster.remote.group import Cluster
from dgxcluster.remote.result import GroupResult
from dgxcluster.serving import supervise, vllm
from dgxcluster.serving.plan import HEAD, NATIVE
from dgxcluster.serving.preflight import split_sections

T = TypeVar("T")
RAY_STOP_GRACE_S = 10


@dataclass
class Found:
    """What one node holds of this cluster: its paths, containers and env-files."""

    node: str
    paths: NodePaths
    containers: list[ContainerInfo] = field(default_factory=list)
    env_files: list[str] = field(default_factory=list)
    unit: bool = False  # this cluster's boot unit is installed (`serving.persist`)

    @property
    def empty(self) -> bool:
        return not self.containers and not self.env_files


# One round trip: $HOME, this cluster's containers, its env-files (under `~/<state_dir>`),
# whether its boot unit is installed.
_DISCOVER = (
    'printf "@@home\\n%s\\n@@rc 0\\n" "$HOME"; '
    'echo @@ps; docker ps -a --no-trunc --filter "label=$1" --format "{{json .}}" 2>&1; echo "@@rc $?"; '
    'cd "$HOME" 2>/dev/null; echo @@env; for f in "$2"/*.env; do [ -e "$f" ] && echo "$f"; done; '
    'echo "@@rc 0"; echo @@unit; [ ! -e "$3" ] || echo present; echo "@@rc 0"'
)


def discover(conn: Connection, session: Session) -> Found:
    inv = session.inventory
    res = conn.run(shell(_DISCOVER, f"{naming.LABEL_CLUSTER}={inv.cluster}",
                         home_relative(inv.state_dir, inv.cluster, ENV_DIR),
                         naming.unit_path(inv.cluster)),
                   timeout=docker.QUICK_S)
    sec = split_sections(res.stdout)
    home = sec.get("home", ("", -1))[0].strip()
    if not home.startswith("/"):
        raise StepError("stop", f"could not read $HOME (got {home!r}): {res.stderr.strip()}", conn.node)
    ps_text, ps_rc = sec.get("ps", ("", -1))
    ps = docker_ps.parse(ps_text)
    if ps_rc != 0 or ps.error:
        first = next((ln for ln in ps_text.splitlines() if ln.strip()), "(no output)")
        raise StepError("stop", f"docker is not usable: {ps.error or first}", conn.node)
    paths = NodePaths(home, inv.state_dir, inv.cluster)
    env = [ln.strip() for ln in sec.get("env", ("", 0))[0].splitlines() if ln.strip()]
    return Found(conn.node, paths, ps.containers,
                 [e if e.startswith("/") else f"{home}/{e}" for e in env],
                 sec.get("unit", ("", 0))[0].strip() == "present")


def _outcomes(step: str, group: GroupResult[Outcome | None]) -> list[Outcome]:
    out: list[Outcome] = []
    for node in group:
        if node in group.values:
            value = group.values[node]
            if value is not None:
                out.append(value)
        else:
            err = group.errors[node]
            if isinstance(err, ConnectError):
                out.append(Outcome(node, step, Status.UNREACHABLE, err.reason))
            else:
                out.append(Outcome(node, step, Status.FAILED, str(err)))
    return out


def _map(cluster: Cluster, fn: Callable[[Connection], T], nodes: list[str]) -> GroupResult[T]:
    return cluster.map(fn, nodes) if nodes else GroupResult()


def teardown(session: Session, found: Mapping[str, Found], progress: Progress,
             keep_containers: bool = False) -> list[Outcome]:
    """vLLM gracefully (rank 0, then the headless ranks of a native cluster), then workers,
    then the head; then containers and env-files go."""
    t = _Teardown(session, found, progress, keep_containers)
    cluster = session.cluster
    outcomes = _outcomes("supervise", _map(cluster, t.stop_watcher, list(found)))
    outcomes += _outcomes("vllm-stop", _map(cluster, t.stop_vllm, t.head_nodes()))
    outcomes += _outcomes("vllm-stop", _map(cluster, t.stop_headless, t.headless_nodes()))
    outcomes += _outcomes("stop-worker", _map(cluster, t.stop_workers, list(found)))
    outcomes += _outcomes("stop-head", _map(cluster, t.stop_head, list(found)))
    outcomes += _outcomes("clean", _map(cluster, t.clean, list(found)))
    return outcomes


class _Teardown:
    """The per-node work of one teardown, in the order `teardown` calls it."""

    def __init__(self, session: Session, found: Mapping[str, Found], progress: Progress,
                 keep_containers: bool) -> None:
        self.inv = session.inventory
        self.found = found
        self.progress = progress
        self.keep = keep_containers
        self.head_name = naming.container_name(self.inv.cluster, HEAD)

    def running(self, node: str) -> list[ContainerInfo]:
        return [c for c in self.found[node].containers if c.running]

    def head_nodes(self) -> list[str]:
        return [n for n in self.found if any(c.name == self.head_name for c in self.running(n))]

    def stop_watcher(self, conn: Connection) -> Outcome | None:
        """First: a watcher left running would bring back what the next steps stop."""
        if supervise.stop(conn, self.found[conn.node].paths) != "stopped":
            return None
        return Outcome(conn.node, "supervise", Status.CHANGED, "stopped the watcher")

    def headless_nodes(self) -> list[str]:
        """Nodes running a headless vLLM rank (a native cluster's other containers)."""
        return [n for n in self.found if self._headless(n)]

    def _headless(self, node: str) -> list[str]:
        return [c.name for c in self.running(node) if c.name != self.head_name
                and c.labels.get(naming.LABEL_EXECUTOR) == NATIVE]

    def stop_vllm(self, conn: Connection) -> Outcome:
        return self._stop_vllm(conn, self.head_name, "")

    def stop_headless(self, conn: Connection) -> Outcome:
        names = self._headless(conn.node)
        return self._stop_vllm(conn, names[0], "headless rank: ")

    def _stop_vllm(self, conn: Connection, container: str, what: str) -> Outcome:
        self.progress.status(conn.node, f"vllm-stop: {what}SIGTERM")
        how = vllm.stop(conn, self.inv, container)
        status = Status.UNCHANGED if how == "absent" else Status.CHANGED
        detail = {"absent": "not running", "stopped": "exited after SIGTERM",
                  "killed": f"killed after {self.inv.serve.stop_timeout_s:g}s grace"}.get(how, how)
        return Outcome(conn.node, "vllm-stop", status, what + detail)

    def stop_workers(self, conn: Connection) -> Outcome | None:
        return self._stop(conn, "worker")

    def stop_head(self, conn: Connection) -> Outcome | None:
        return self._stop(conn, HEAD)

    def _stop(self, conn: Connection, role: str) -> Outcome | None:
        names = [c.name for c in self.running(conn.node)
                 if (c.name == self.head_name) == (role == HEAD)]
        if not names:
            return None
        for name in names:
            self.progress.status(conn.node, f"stop-{role}: docker stop {name}")
            docker.stop(conn, name, RAY_STOP_GRACE_S)
        return Outcome(conn.node, f"stop-{role}", Status.CHANGED, "stopped " + ", ".join(names))

    def clean(self, conn: Connection) -> Outcome | None:
        f = self.found[conn.node]
        done: list[str] = []
        if not self.keep:
            done += [f"removed {c.name}" for c in f.containers if docker.remove(conn, c.name)]
        elif f.containers:
            done.append("kept " + ", ".join(c.name for c in f.containers) + " (--keep-containers)")
        conn.run(shell(f'rm -rf "$1"; rm -f "$2/{VLLM_PID}" "$2/{SUPERVISOR_STATE}"', f.paths.env_dir,
                       f.paths.log_dir),
                 timeout=docker.QUICK_S).check()
        if f.env_files:
            done.append(f"deleted {len(f.env_files)} env-file(s)")
        if not done:
            return None
        return Outcome(conn.node, "clean", Status.CHANGED, "; ".join(done))


@dataclass
class Created:
    """What this start made, so a failure removes exactly that."""

    containers: dict[str, str] = field(default_factory=dict)  # node -> container
    env_files: dict[str, str] = field(default_factory=dict)  # node -> path
    vllm_on: str | None = None  # head node, when vLLM was launched in a container we kept

    @property
    def nodes(self) -> list[str]:
        return list(dict.fromkeys([*self.containers, *self.env_files,
                                   *([self.vllm_on] if self.vllm_on else [])]))


def rollback(session: Session, created: Created, progress: Progress) -> list[str]:
    """Undo `created` on every node; returns one line per node saying what happened."""
    inv = session.inventory

    def one(conn: Connection) -> str:
        node = conn.node
        progress.status(node, "rollback")
        done: list[str] = []
        if created.vllm_on == node and node not in created.containers:
            with contextlib.suppress(DgxClusterError):
                vllm.stop(conn, inv)
                done.append("stopped the vLLM it launched")
        name = created.containers.get(node)
        if name and docker.remove_settled(conn, name):
            done.append(f"removed {name}")
        path = created.env_files.get(node)
        if path:
            conn.run(["rm", "-f", path], timeout=docker.QUICK_S).check()
            done.append(f"deleted {path}")
        return f"{node}: " + ("; ".join(done) if done else "nothing to undo")

    nodes = created.nodes
    if not nodes:
        return []
    group = session.cluster.map(one, nodes)
    lines = []
    for node in nodes:
        if node in group.values:
            lines.append(group.values[node])
        else:
            err = group.errors[node]
            what = ", ".join(filter(None, [created.containers.get(node), created.env_files.get(node)]))
            lines.append(f"{node}: could not roll back ({err}); left behind: {what or 'vLLM'}; "
                         "run `dgxcluster stop` once it is reachable")
    return lines
