"""Checks across sections that would otherwise fail late, on the nodes: jump hosts that loop,
ports that Ray and vLLM cannot all bind on the head (TP x PP x DP: placement.py; the
fabric: topology.py).

Pure functions of the validated model (no I/O); `schema.InventoryModel` calls them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dgxcluster.inventory.jumps import JumpHop, parse_jump

if TYPE_CHECKING:
    from dgxcluster.inventory.schema import InventoryModel

Problem = tuple[tuple[str | int, ...], str]

#: Ports `ray start` takes by default on every node (Ray 2.60, ray/scripts/scripts.py and
#: ray/_private/parameter.py): the Ray client server, the workers' range
#: (--min-worker-port/--max-worker-port) and the dashboard agent's HTTP port.
RAY_CLIENT_PORT = 10001
RAY_WORKER_PORTS = range(10002, 20000)
RAY_AGENT_PORT = 52365


def ray_reserved_port(port: int) -> str | None:
    """What Ray itself binds on `port` on every node, or None."""
    if port == RAY_CLIENT_PORT:
        return "Ray's client server (ray start --ray-client-server-port, default 10001)"
    if port in RAY_WORKER_PORTS:
        return "Ray's worker ports (ray start --min-worker-port 10002 to --max-worker-port 19999)"
    if port == RAY_AGENT_PORT:
        return "Ray's dashboard agent (ray start --dashboard-agent-listen-port, default 52365)"
    return None


def port_problems(inv: InventoryModel) -> list[Problem]:
    """Each port the head binds must be its own and not one Ray takes by default: caught at
    load, not as vLLM's EADDRINUSE (or Ray's "port used by other components") at start."""
    errors: list[Problem] = []
    ours: dict[tuple[str, ...], int] = {
        ("ray", "port"): inv.ray.port,
        ("ray", "dashboard_port"): inv.ray.dashboard_port,
        ("serve", "port"): inv.serve.port,
    }
    if inv.serve.executor == "native":  # rank 0 listens on it, beside the API
        ours[("serve", "master_port")] = inv.serve.master_port
        if inv.serve.data_parallel_size > 1:  # the replicas join the head's front end there
            ours[("serve", "data_parallel_rpc_port")] = inv.serve.data_parallel_rpc_port
    explicit = {("ray", k) for k in inv.ray.model_fields_set} | {
        ("serve", k) for k in inv.serve.model_fields_set}
    seen: dict[int, tuple[str, ...]] = {}
    for path, port in ours.items():
        if port in seen:
            # reported at the key the file sets (a default is not what to edit)
            at, other = (path, seen[port]) if path in explicit or seen[port] not in explicit \
                else (seen[port], path)
            errors.append((at, f"{port} is also {'.'.join(other)}: Ray and vLLM share the "
                           "head's network, so each needs its own port"))
        else:
            seen[port] = path
        taken = ray_reserved_port(port)
        if taken:
            errors.append((path, f"{port} is taken by {taken}; choose a port outside "
                           f"{RAY_CLIENT_PORT}-{RAY_WORKER_PORTS[-1]}, other than {RAY_AGENT_PORT}"))
    return errors


def jump_hops(inv: InventoryModel, name: str) -> tuple[JumpHop, ...] | None:
    """The jump hosts the inventory sets for node `name`, outermost first: () for a direct
    connection, None when the inventory says nothing (then ~/.ssh/config decides).
    `ssh.jump` applies to every node without its own `jump`; a node that is itself in that
    chain is reached through the hops before it."""
    node = inv.node(name)
    if node.jump is not None:
        return parse_jump(node.jump)
    if inv.ssh.jump is None:
        return None
    hops = parse_jump(inv.ssh.jump)
    for i, hop in enumerate(hops):
        if hop.host == name:
            return hops[:i]
    return hops


def jump_problems(inv: InventoryModel) -> list[Problem]:
    """No node may be reached through itself, and jumps through nodes may not loop. (A hop's
    own route counts only for the first hop, as with `ssh -J`.)"""
    errors: list[Problem] = []
    for i, node in enumerate(inv.nodes):
        try:
            path = _expand(inv, node.name, [node.name])
        except _Loop as loop:
            errors.append((("nodes", i, "jump"),
                           "jump hosts form a loop: " + " -> ".join(loop.chain)))
            continue
        if node.name in path:
            errors.append((("nodes", i, "jump"), f"{node.name} cannot be reached through itself "
                           f"(its jump hosts: {' -> '.join(path)})"))
    return errors


class _Loop(Exception):
    def __init__(self, chain: list[str]) -> None:
        self.chain = chain


def _expand(inv: InventoryModel, name: str, stack: list[str]) -> list[str]:
    """The hosts on the way to node `name` as the inventory sets them, node names expanded."""
    hops = jump_hops(inv, name) or ()
    if not hops:
        return []
    first = hops[0].host
    before: list[str] = []
    if first in inv.names:
        if first in stack:
            raise _Loop([*stack, first])
        before = _expand(inv, first, [*stack, first])
    return before + [h.host for h in hops]
