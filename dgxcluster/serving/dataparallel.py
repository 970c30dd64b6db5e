"""The data-parallel part of each node's `vllm serve`: replicas behind vLLM's own front end,
one endpoint on the head. Pure; placement (`inventory.placement`) in, per-node argv out.

The native executor's per-node argv (`serving/plan.py` executor_flags) takes these flags in
place of its TP-only `--nnodes/--node-rank/--master-*` ones: where a replica spans nodes
they are here already. Checked against vLLM's own argument tables (tests/unit).

vLLM's multi-node data parallel (docs/serving/data_parallel_deployment.md, "Internal Load
Balancing"; vllm/entrypoints/cli/serve.py `run_headless`; vllm/engine/arg_utils.py
`create_engine_config`; vllm/config/parallel.py `nnodes_within_dp`):

- A replica that fits a node (TP x PP <= its GPUs): every node runs `--data-parallel-size D
  --data-parallel-size-local L --data-parallel-address HEAD --data-parallel-rpc-port P`; the
  others add `--data-parallel-start-rank S --headless` (their first replica's rank; headless:
  no API server, so the head's is the one endpoint).
- A replica that spans k nodes (TP x PP = k x GPUs per node, the DGX Spark case: TP 2 on
  one-GPU nodes): its first node (the replica's leader, node rank `r x k`) runs the replica's
  engine and gets the DP flags plus `--nnodes/--node-rank/--master-addr/--master-port`, with
  `--data-parallel-size-local 1`; its other nodes (followers) run only the replica's
  torch.distributed workers: `--nnodes k --node-rank j --master-addr LEADER --master-port M
  --headless`, the TP-only flags, no DP flag. `--master-addr` is the replica's leader, so each
  replica forms its own process group.

Why (read from vLLM's source, NOT run on a real cluster): a dense model's DP engine is an
independent DP-1 engine (vllm/v1/engine/core.py `run_engine_core`, non-MoE branch), so its
process group holds only its replica's TP x PP ranks, rendezvoused at the engine's
`--master-addr:--master-port` (vllm/distributed/parallel_state.py
`init_distributed_environment`, nnodes > 1). Every replica at the head's address would put
every replica's rank 0 in one TCP store (vLLM PR 39405: "Dense + multinode + DP > 1"). A
follower is run by `run_headless` (vllm/entrypoints/cli/serve.py, node_rank_within_dp > 0)
with its own flags, never re-scoped: given the DP flags, its workers join as rank
`dp_rank x world + r` of `world x DP` ranks (world_size_across_dp) while its leader's engine
forms a world of `world`, so a follower gets no DP flag. The leader's `--nnodes/--node-rank`
depend on the release: from vLLM 0.28.0 the engine re-scopes them to its replica
(ParallelConfig.reconfigure_for_independent_dp_rank: nnodes_within_dp, node_rank %
nnodes_within_dp), so it gets the whole cluster's `--nnodes N --node-rank R` (vLLM infers
`data_parallel_rank = R x local_world_size // (TP x PP)`, which `--data-parallel-start-rank`
states); up to 0.27 the engine kept them (only the DP fields were reset, verl issue 6856), so
the leader says its replica's `--nnodes k --node-rank 0` (nnodes_within_dp = k // DP = 1 before
the reset: still a leader in `run_headless`; k after it: the replica's own group). A release
nothing names (a pulled image) gets the newer form. A MoE model's DP engines share one world
of every rank instead (DPEngineCoreProc): these flags are for dense models.

`--data-parallel-start-rank` without `--headless` would switch vLLM to hybrid load balancing
(arg_utils: `if data_parallel_start_rank and not headless`), so only the head goes without it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from dgxcluster.core.imagevllm import image_vllm
from dgxcluster.inventory import placement
from dgxcluster.inventory.placement import Placement
from dgxcluster.vllmcli import snapshot

if TYPE_CHECKING:
    from dgxcluster.inventory.schema import InventoryModel

#: vLLM's defaults (vllm/config/parallel.py): data_parallel_rpc_port, master_port (the
#: inventory's serve.data_parallel_rpc_port and serve.master_port default to them).
RPC_PORT = 29550
MASTER_PORT = 29501
#: From this vLLM release a dense DP engine re-scopes --nnodes/--node-rank to its replica.
RESCOPED_FROM = (0, 28)


@dataclass(frozen=True)
class DpNode:
    node: str
    node_rank: int
    dp_start: int  # the first replica this node runs (or belongs to)
    dp_local: int  # replicas it runs: 1 for a node of a replica spanning nodes
    headless: bool
    argv: tuple[str, ...]  # to append to `vllm serve MODEL ...` on this node


def rescopes(vllm_version: str | None) -> bool:
    """Does this vLLM re-scope a dense DP engine's --nnodes/--node-rank to its replica? An
    unknown release is taken to be a recent one."""
    parts = snapshot.release(vllm_version) if vllm_version is not None else ()
    return not parts or parts >= RESCOPED_FROM


def dp_argv(p: Placement, head_address: str, *, rpc_port: int = RPC_PORT,
            master_port: int = MASTER_PORT, addresses: Mapping[str, str] | None = None,
            vllm_version: str | None = None) -> list[DpNode]:
    """Each serving node's data-parallel flags, head (node rank 0) first. `addresses`: each
    node's fabric address (a spanning replica's leader is its `--master-addr`)."""
    common = ["--data-parallel-size", str(p.dp), "--data-parallel-address", head_address,
              "--data-parallel-rpc-port", str(rpc_port)]
    span = p.nodes_per_replica
    out = []
    for k, node in enumerate(p.nodes):
        if span > 1:
            start, within = divmod(k, span)
            leader = (addresses or {}).get(p.nodes[k - within], head_address)
            master = ["--master-addr", leader, "--master-port", str(master_port)]
            if within:  # a follower: its leader's workers, no DP flag
                argv = ["--nnodes", str(span), "--node-rank", str(within), *master, "--headless"]
                out.append(DpNode(node, k, start, 1, True, tuple(argv)))
                continue
            nnodes, rank = (len(p.nodes), k) if rescopes(vllm_version) else (span, 0)
            local = 1
            extra = ["--nnodes", str(nnodes), "--node-rank", str(rank), *master]
        else:
            local = p.gpus_per_node // p.replica_gpus
            start, extra = k * local, []
        argv = [*common, "--data-parallel-size-local", str(local), *extra]
        if k > 0:
            argv += ["--data-parallel-start-rank", str(start), "--headless"]
        out.append(DpNode(node, k, start, local, k > 0, tuple(argv)))
    return out


def node_argv(inv: InventoryModel, node: str) -> list[str]:
    """`node`'s data-parallel flags for the inventory's placement, ports from the inventory,
    the leader's flags for the image's vLLM release (`core.imagevllm`)."""
    p = placement.place(inv)
    version = image_vllm(inv).version if p.nodes_per_replica > 1 else None
    found = dp_argv(p, str(inv.head_node.fabric_ip), rpc_port=inv.serve.data_parallel_rpc_port,
                    master_port=inv.serve.master_port,
                    addresses={n.name: str(n.fabric_ip) for n in inv.nodes}, vllm_version=version)
    return list(next(d.argv for d in found if d.node == node))


def leader_of(inv: InventoryModel, node: str) -> str | None:
    """Where a replica spans nodes: the first node of `node`'s replica (its leader, whose
    `--master-addr` the replica's process group meets at; `node` itself for a leader).
    None without data parallel, where a replica fits a node, or for a node that serves not."""
    if inv.serve.data_parallel_size == 1:
        return None
    p = placement.place(inv)
    span = p.nodes_per_replica
    if span == 1 or node not in p.nodes:
        return None
    k = p.nodes.index(node)
    return p.nodes[k - k % span]


def uses_master_port(inv: InventoryModel) -> bool:
    """Does rank 0 listen on --master-port? Always without data parallel; with it only where
    a replica spans nodes (each replica that fits a node keeps its process group local)."""
    return inv.serve.data_parallel_size == 1 or placement.place(inv).nodes_per_replica > 1

