"""Waiting for Ray: the head started first (workers need it registered), then every node counted.

Cheap probes run per node (container state, "Ray runtime started." in its log); the slow
`ray status` (seconds of Python in the head container) runs only once every node says it
started, and is the authority on node and GPU counts. On failure the missing node is named
with its log tail.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from dgxcluster.core import docker
from dgxcluster.core.docker import ContainerState, indented, parse_state
from dgxcluster.core.progress import Progress, StatusThrottle
from dgxcluster.errors import CommandTimeout, ConnectError, StepError
from dgxcluster.facts import ray_status
from dgxcluster.remote.command import shell
from dgxcluster.remote.connection import Connection
from dgxcluster.remote.group import Cluster

STARTED_MARK = "Ray runtime started"
PROBE_TIMEOUT_S = 15.0
POLL_S = 0.25

_PROBE = (
    'docker inspect -f "{{.State.Status}} {{.State.ExitCode}}" "$1" 2>/dev/null || echo absent; '
    'docker logs "$1" 2>&1 | grep -c "$2" || true'
)


@dataclass(frozen=True)
class RayNodeProbe:
    state: ContainerState
    started: bool


def parse_probe(text: str) -> RayNodeProbe:
    lines = text.strip().splitlines()
    st = parse_state(lines[0] if lines else "absent")
    count = lines[1].strip() if len(lines) > 1 else "0"
    return RayNodeProbe(st, count.isdigit() and int(count) > 0)


def probe(conn: Connection, container: str) -> RayNodeProbe:
    res = conn.run(shell(_PROBE, container, STARTED_MARK), timeout=PROBE_TIMEOUT_S)
    return parse_probe(res.stdout)


def _exited(conn: Connection, container: str, st: ContainerState, step: str) -> StepError:
    tail = docker.log_tail(conn, container)
    what = "is gone" if st.status == "absent" else f"exited (status {st.exit_code})"
    return StepError(step, f"container {container} {what}; its last lines:\n{indented(tail)}",
                     conn.node)


def wait_head(conn: Connection, container: str, timeout_s: float,
              sleep: Callable[[float], None] = time.sleep) -> float:
    """Until the head's `ray start` says "Ray runtime started." (workers can join from then
    on: Ray prints it once the head node is registered in its GCS, which is what a joining
    worker looks up, a limited number of times, before it gives up)."""
    t0 = time.monotonic()
    while True:
        p = probe(conn, container)
        if not p.state.running:
            raise _exited(conn, container, p.state, "ray-head")
        if p.started:
            return time.monotonic() - t0
        if time.monotonic() - t0 > timeout_s:
            tail = docker.log_tail(conn, container)
            raise StepError("ray-head", f"Ray did not start on the head within {timeout_s:g}s "
                            f"(no \"{STARTED_MARK}\"); {container}'s last lines:\n"
                            f"{indented(tail)}", conn.node)
        sleep(POLL_S)


def wait_joined(cluster: Cluster, names: dict[str, str], timeout_s: float, progress: Progress,
                sleep: Callable[[float], None] = time.sleep) -> float:
    """Until every node's `ray start` says it started (a worker says so once registered).

    `names` maps node -> its container. Fails fast when a container exits or a node stops
    answering; on timeout names the nodes that never joined, with their log tails.
    """
    nodes: Sequence[str] = list(names)
    t0 = time.monotonic()
    live = StatusThrottle(progress)
    while True:
        probes = cluster.map(lambda c: probe(c, names[c.node]), nodes)
        for node, err in probes.errors.items():
            if isinstance(err, ConnectError):
                raise err
            if isinstance(err, CommandTimeout):
                raise ConnectError(node, f"stopped answering while Ray started: {err}")
            raise StepError("ray-ready", str(err), node)
        waiting = []
        for node in nodes:
            p = probes.values[node]
            if not p.state.running:
                raise _exited(cluster.conn(node), names[node], p.state, "ray-ready")
            if not p.started:
                waiting.append(node)
        elapsed = time.monotonic() - t0
        if not waiting:
            return elapsed
        for node in nodes:
            gist = "ray-ready: " + ("joining" if node in waiting else "joined")
            live.status(node, gist, f"{gist} ({elapsed:.0f}s)")
        if elapsed > timeout_s:
            raise _timeout(cluster, names, waiting, None, timeout_s)
        sleep(POLL_S)


def confirm(cluster: Cluster, head: str, names: dict[str, str], gpus_needed: int,
            timeout_s: float, progress: Progress, stop: threading.Event | None = None,
            sleep: Callable[[float], None] = time.sleep) -> ray_status.RayStatus:
    """Until `ray status` (in the head container) counts every node and enough GPUs."""
    t0 = time.monotonic()
    live = StatusThrottle(progress)
    while True:
        res = cluster.conn(head).run(["docker", "exec", names[head], *ray_status.COMMAND], timeout=60)
        last = ray_status.parse(res.stdout if res.ok else res.stderr or res.stdout)
        if not last.error and last.nodes >= len(names) and last.gpus >= gpus_needed:
            return last
        if not last.error and last.nodes >= len(names):
            raise StepError(
                "ray-ready",
                f"Ray counts {last.gpus:g} GPU(s) but serving needs {gpus_needed} "
                "(serve.tensor_parallel_size x pipeline_parallel_size); check ray.num_gpus "
                "and container.gpus / the NVIDIA container toolkit", head)
        elapsed = time.monotonic() - t0
        gist = f"ray-ready: Ray counts {last.nodes}/{len(names)} nodes"
        live.status(head, gist, f"{gist} ({elapsed:.0f}s)")
        if elapsed > timeout_s:
            raise _timeout(cluster, names, [], last, timeout_s)
        if stop is not None and stop.is_set():
            raise StepError("ray-ready", "cancelled", head)
        sleep(POLL_S)


def wait_ray(cluster: Cluster, head: str, names: dict[str, str], gpus_needed: int,
             timeout_s: float, progress: Progress) -> ray_status.RayStatus:
    """Every node joined, then `ray status` agrees (node and GPU counts)."""
    t0 = time.monotonic()
    wait_joined(cluster, names, timeout_s, progress)
    return confirm(cluster, head, names, gpus_needed, max(1.0, timeout_s - (time.monotonic() - t0)),
                   progress)


def _timeout(cluster: Cluster, names: dict[str, str], waiting: list[str],
             last: ray_status.RayStatus | None, timeout_s: float) -> StepError:
    suspects = waiting or [n for n in names if n != cluster.head]
    parts = []
    for node in suspects:
        tail = docker.log_tail(cluster.conn(node), names[node])
        parts.append(f"{node} ({names[node]}), last lines:\n{indented(tail)}")
    counted = f"Ray counts {last.nodes} of {len(names)} nodes" if last and not last.error else \
        (last.error if last and last.error else "not every node reported that Ray started")
    culprit = suspects[0] if len(suspects) == 1 else None
    return StepError("ray-ready",
                     f"Ray did not report every node within {timeout_s:g}s ({counted}); "
                     f"missing: {', '.join(suspects)}\n" + "\n".join(parts), culprit)
