"""`serve.restart: on-failure`: the watchers `start` leaves on the nodes (`watcher_nodes`).

Where it lives, and why: a node-side program (`nodeside/supervisor.py`, shipped in the
bundle, run detached with `setsid` on the head) rather than Docker restart policies. A
restart policy sees only a container's main process: it cannot tell a vLLM that hangs with
its container "Up", cannot relaunch vLLM inside the Ray head container (vLLM is not its main
process), and restarts without a budget (one user's `unless-stopped` looped ~35 times and
wedged the node). The watcher asks `/health` on the node itself, so it needs neither the
operator's machine nor the network between them.

It is given, as data, what to watch and how to bring it back (`config`): the containers
dgxcluster names (`core.naming`), vLLM's exit-status file and log, and the argv that
relaunches vLLM (`plan.serve_exec`).

With `serve.executor: native` every node runs its own watcher over its own rank: the rank
is its container's main process, so restarting the container relaunches it, and no node
can act on another's (the watcher must not depend on the operator's machine, and the nodes
have no SSH between them). Ranks come back together because a rank that loses a peer has a
broken process group: it exits, or (vLLM's headless worker while idle) waits in its busy
loop and the head's /health, which is a headless rank's health, stops answering; either way
its own watcher restarts it, and the headless ranks wait at rank 0's master port for the
new rank 0. A hung cluster likewise restarts every rank. Each watcher has its own
budget (a headless rank's twice rank 0's: `budget`) and its own records. `start` stops them
before it changes anything and starts them once the endpoint is ready; `stop` (and `start
--restart`) stop them first, so they never fight them.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from dgxcluster.core import docker, naming, ship
from dgxcluster.core.endpoint import ANY_IPV4, ANY_IPV6, listen_host, url_host
from dgxcluster.core.nodepaths import (
    SUPERVISOR_CONFIG,
    SUPERVISOR_LOG,
    SUPERVISOR_PID,
    SUPERVISOR_RECORDS,
    SUPERVISOR_STATE,
    VLLM_EXIT,
    VLLM_PID,
)
from dgxcluster.core.ranks import node_ranks
from dgxcluster.core.steps import Outcome, Status
from dgxcluster.errors import StepError
from dgxcluster.remote.command import shell
from dgxcluster.serving.plan import CONTAINER_LOG_DIR, NATIVE, role_of, serve_exec

if TYPE_CHECKING:
    from dgxcluster.core.nodepaths import NodePaths
    from dgxcluster.inventory.schema import InventoryModel
    from dgxcluster.remote.connection import Connection

STEP = "supervise"
PROBE_TIMEOUT_S = 5.0

# $1 config  $2 bundle  $3 its output  $4 pid file: detached from this SSH session
# (`setsid` is not a group leader here, so it execs: $! is the watcher's own pid)
_LAUNCH = ('cd / || exit 1; setsid python3 "$2" supervisor "$1" >>"$3" 2>&1 </dev/null & '
           'echo $! >"$4"; sleep 0.3; kill -0 $! 2>/dev/null && echo started')
# $1 pid file: "stopped" / "absent"; the pid must still be our supervisor. Its whole
# process group goes (setsid made it the leader; a `python3` wrapper script stays with it)
_STOP = ('[ -f "$1" ] || { echo absent; exit 0; }; pid=$(cat "$1"); '
         'if [ -n "$pid" ] && grep -qs supervisor "/proc/$pid/cmdline"; then kill -- "-$pid"; i=0; '
         'while kill -0 "$pid" 2>/dev/null && [ $i -lt 50 ]; do sleep 0.2; i=$((i+1)); done; '
         'kill -9 -- "-$pid" 2>/dev/null; echo stopped; else echo absent; fi; rm -f "$1"')
# $1 pid file  $2 config: "same" when that supervisor runs with exactly this config
_SAME = ('pid=$(cat "$1" 2>/dev/null) && [ -n "$pid" ] && grep -qs supervisor "/proc/$pid/cmdline" '
         '&& [ -f "$2" ] && cat "$2"')
# inside the head container: end a hung vLLM (its launcher then records the exit status)
_KILL = f'kill -9 "$(cat "$1/{VLLM_PID}")"'


def health_url(inv: InventoryModel, node: str | None = None) -> str:
    """vLLM's /health as `node` (default: the head) reaches it: on the head itself, its
    loopback; elsewhere (a native headless rank's watcher), the head's fabric address, which
    vLLM answers on when it listens on every interface (`serve.host`'s default)."""
    host = listen_host(inv)
    if node is None or node == inv.head_name:
        local = {ANY_IPV4: "127.0.0.1", ANY_IPV6: "::1"}.get(host, host)
    else:
        local = str(inv.head_node.fabric_ip) if host in (ANY_IPV4, ANY_IPV6) else host
    return f"http://{url_host(local)}:{inv.serve.port}/health"


def watcher_nodes(inv: InventoryModel) -> list[str]:
    """Where watchers live (with `serve.restart: on-failure`): every serving node, head
    first, each acting on its own containers only (no node can act on another's). Native:
    each over its own rank. Ray: the head over vLLM (it lives in the head container) and its
    Ray head, each worker over its Ray worker container."""
    return list(node_ranks(inv))


def watches_vllm(inv: InventoryModel, node: str) -> bool:
    """False for a Ray worker node: no vLLM runs there (its watcher keeps the Ray worker
    container up, so that the head's relaunch of vLLM finds every GPU again)."""
    return inv.serve.executor == NATIVE or node == inv.head_name


def budget(inv: InventoryModel, node: str) -> int:
    """Restarts `node`'s watcher may make per window. A native headless rank follows rank 0:
    it restarts each time rank 0 does, and once more when rank 0 is restarted under its
    fresh rank (both watchers saw the same hang; which acts first is a race). Twice the
    budget, so that it never gives up before rank 0's watcher does: that one decides when
    the cluster is left stopped (a headless rank that gave up first would leave rank 0
    waiting for it until `ready_timeout_s`)."""
    s = inv.serve
    follows = s.executor == NATIVE and node != inv.head_name
    return s.max_restarts * 2 if follows else s.max_restarts


def config(inv: InventoryModel, paths: NodePaths, config_hash: str,
           node: str | None = None) -> dict[str, object]:
    """What `node`'s watcher (default: the head's) watches and how it brings vLLM back
    (pure: JSON-able). With Ray it relaunches vLLM in the head container; native, the
    container's main process is the rank, so restarting the container is the relaunch."""
    s = inv.serve
    node = node or inv.head_name
    role = role_of(inv, node)
    own = naming.container_name(inv.cluster, role)
    log = paths.log_dir
    how: dict[str, object] = {}
    if s.executor != NATIVE and watches_vllm(inv, node):  # the Ray head: vLLM is no main process
        how = {"relaunch": serve_exec(inv),
               "kill": ["docker", "exec", own, *shell(_KILL, CONTAINER_LOG_DIR)]}
    vllm: dict[str, object] = {"health_url": health_url(inv, node),
                               "exit_file": f"{log}/{VLLM_EXIT}", "log": paths.vllm_log}
    return {
        "config": config_hash,
        "containers": [own],
        **(vllm if watches_vllm(inv, node) else {}),  # a Ray worker: its container only
        **how,
        "records": f"{log}/{SUPERVISOR_RECORDS}",
        "state": f"{log}/{SUPERVISOR_STATE}",
        "max_restarts": budget(inv, node),
        "window_s": s.restart_window_s,
        "backoff_s": s.restart_backoff_s,
        "backoff_max_s": s.restart_backoff_max_s,
        "interval_s": s.health_interval_s,
        "failed_probes": s.health_failures,
        "probe_timeout_s": PROBE_TIMEOUT_S,
        "ready_timeout_s": s.ready_timeout_s,
    }


def render(cfg: dict[str, object]) -> bytes:
    return (json.dumps(cfg, indent=1, sort_keys=True) + "\n").encode()


def launch_argv(paths: NodePaths, bundle: str) -> list[str]:
    """Start the watcher detached with the config `ensure` wrote (also a boot plan step)."""
    return shell(_LAUNCH, f"{paths.root}/{SUPERVISOR_CONFIG}", bundle,
                 f"{paths.log_dir}/{SUPERVISOR_LOG}", f"{paths.log_dir}/{SUPERVISOR_PID}")


def stop(conn: Connection, paths: NodePaths) -> str:
    """Stop the node's watcher: 'stopped' or 'absent'."""
    res = conn.run(shell(_STOP, f"{paths.log_dir}/{SUPERVISOR_PID}"), timeout=docker.QUICK_S + 15)
    return res.stdout.strip().splitlines()[-1] if res.ok and res.stdout.strip() else "absent"


def ensure(conn: Connection, inv: InventoryModel, paths: NodePaths, config_hash: str) -> Outcome:
    """The watcher runs with this config (unchanged when it already does); with
    `serve.restart: never`, none runs."""
    pid_file = f"{paths.log_dir}/{SUPERVISOR_PID}"
    cfg_file = f"{paths.root}/{SUPERVISOR_CONFIG}"
    if inv.serve.restart == "never":
        how = stop(conn, paths)
        return Outcome(conn.node, STEP, Status.CHANGED if how == "stopped" else Status.UNCHANGED,
                       "stopped the watcher (serve.restart: never)" if how == "stopped"
                       else "off (serve.restart: never)")
    data = render(config(inv, paths, config_hash, conn.node))
    same = conn.run(shell(_SAME, pid_file, cfg_file), timeout=docker.QUICK_S)
    policy = (f"on-failure: up to {budget(inv, conn.node)} restart(s) per "
              f"{inv.serve.restart_window_s:g}s")
    if same.ok and same.stdout.encode() == data:
        return Outcome(conn.node, STEP, Status.UNCHANGED, f"watcher running ({policy})")
    stop(conn, paths)
    bundle = ship.ensure(conn, paths)
    conn.put(data, cfg_file, 0o600, timeout=docker.QUICK_S)
    res = conn.run(launch_argv(paths, bundle), timeout=docker.QUICK_S)
    if not res.ok or "started" not in res.stdout:
        tail = conn.run(["tail", "-n", "5", f"{paths.log_dir}/{SUPERVISOR_LOG}"], timeout=docker.QUICK_S)
        raise StepError(STEP, f"the watcher did not start: {(tail.stdout or res.stderr).strip()}",
                        conn.node)
    what = (f"health {health_url(inv, conn.node)}" if watches_vllm(inv, conn.node) else
            f"container {naming.container_name(inv.cluster, role_of(inv, conn.node))}")
    return Outcome(conn.node, STEP, Status.CHANGED, f"watcher started ({policy}; {what} "
                   f"every {inv.serve.health_interval_s:g}s)")
