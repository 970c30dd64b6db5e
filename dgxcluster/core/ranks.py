"""Which node is which vLLM rank when vLLM spans the nodes with its own executor
(`serve.executor: native`): rank 0 on the head (it serves the API), then the other serving
nodes in placement order (`inventory.placement.serving`: serve.nodes, head first, along the
cables), each running `vllm serve --headless --node-rank R`. Nodes that do not serve have no
rank; `--nnodes` is the number of serving nodes.

With `serve.data_parallel_size` > 1 the nodes run replicas (`serving/dataparallel.py` has
their flags): each node's replicas and the layout ("DP 2 x TP 1") are for `status`.

`start` passes the numbers to vLLM, `status` shows them: both ask here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dgxcluster.inventory import placement

if TYPE_CHECKING:
    from dgxcluster.inventory.schema import InventoryModel


def node_ranks(inv: InventoryModel) -> dict[str, int]:
    """node -> its `--node-rank`: the head 0, the other serving nodes 1.. in placement order."""
    others = [n for n in placement.serving(inv) if n != inv.head_name]
    return {inv.head_name: 0, **{n: i for i, n in enumerate(others, start=1)}}


def headless(inv: InventoryModel) -> list[str]:
    """The nodes that run `--headless` (every serving node but the head), in rank order."""
    return [n for n in placement.serving(inv) if n != inv.head_name]


def replicas(inv: InventoryModel) -> dict[str, str]:
    """node -> the data-parallel replica(s) its GPUs hold: "1", or "0-1" for two on a node;
    empty without data parallel."""
    if inv.serve.data_parallel_size == 1 or placement.problem(inv) is not None:
        return {}
    held: dict[str, list[int]] = {}
    for r in placement.place(inv).ranks:
        held.setdefault(r.node, [])
        if r.dp not in held[r.node]:
            held[r.node].append(r.dp)
    return {n: str(d[0]) if len(d) == 1 else f"{d[0]}-{d[-1]}" for n, d in held.items()}


def layout(inv: InventoryModel) -> str:
    """The sizes as status shows them: "TP 2" or "DP 2 x TP 1" (x PP when > 1)."""
    s = inv.serve
    parts = ([f"DP {s.data_parallel_size}"] if s.data_parallel_size > 1 else []) + \
        [f"TP {s.tensor_parallel_size}"] + \
        ([f"PP {s.pipeline_parallel_size}"] if s.pipeline_parallel_size > 1 else [])
    return " x ".join(parts)
