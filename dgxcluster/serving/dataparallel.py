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
  one-GPU nodes): vLLM's `--nnodes N --node-rank R --master-addr HEAD --master-port M` mode
  with the same DP flags and `--data-parallel-size-local 1`; vLLM groups nodes by
  `node_rank // k` into replicas (arg_utils infers `data_parallel_rank = node_rank *
  local_world_size // (TP x PP)`, which `--data-parallel-start-rank` states explicitly), and
  within a replica `node_rank % k > 0` runs the headless workers of the replica's leader.

`--data-parallel-start-rank` without `--headless` would switch vLLM to hybrid load balancing
(arg_utils: `if data_parallel_start_rank and not headless`), so only the head goes without it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from dgxcluster.inventory import placement
from dgxcluster.inventory.placement import Placement

if TYPE_CHECKING:
    from dgxcluster.inventory.schema import InventoryModel

#: vLLM's defaults (vllm/config/parallel.py): data_parallel_rpc_port, master_port (the
#: inventory's serve.data_parallel_rpc_port and serve.master_port default to them).
RPC_PORT = 29550
MASTER_PORT = 29501


@dataclass(frozen=True)
class DpNode:
    node: str
    node_rank: int
    dp_start: int  # the first replica this node runs (or belongs to)
    dp_local: int  # replicas it runs: 1 for a node of a replica spanning nodes
    headless: bool
    argv: tuple[str, ...]  # to append to `vllm serve MODEL ...` on this node


def dp_argv(p: Placement, head_address: str, *, rpc_port: int = RPC_PORT,
            master_port: int = MASTER_PORT) -> list[DpNode]:
    """Each serving node's data-parallel flags, head (node rank 0) first."""
    common = ["--data-parallel-size", str(p.dp), "--data-parallel-address", head_address,
              "--data-parallel-rpc-port", str(rpc_port)]
    span = p.nodes_per_replica
    out = []
    for k, node in enumerate(p.nodes):
        if span > 1:
            start, local = k // span, 1
            extra = ["--nnodes", str(len(p.nodes)), "--node-rank", str(k),
                     "--master-addr", head_address, "--master-port", str(master_port)]
        else:
            local = p.gpus_per_node // p.replica_gpus
            start, extra = k * local, []
        argv = [*common, "--data-parallel-size-local", str(local), *extra]
        if k > 0:
            argv += ["--data-parallel-start-rank", str(start), "--headless"]
        out.append(DpNode(node, k, start, local, k > 0, tuple(argv)))
    return out


def node_argv(inv: InventoryModel, node: str) -> list[str]:
    """`node`'s data-parallel flags for the inventory's placement, ports from the inventory."""
    found = dp_argv(placement.place(inv), str(inv.head_node.fabric_ip),
                    rpc_port=inv.serve.data_parallel_rpc_port, master_port=inv.serve.master_port)
    return list(next(d.argv for d in found if d.node == node))


def uses_master_port(inv: InventoryModel) -> bool:
    """Does rank 0 listen on --master-port? Always without data parallel; with it only where
    a replica spans nodes (each replica that fits a node keeps its process group local)."""
    return inv.serve.data_parallel_size == 1 or placement.place(inv).nodes_per_replica > 1

