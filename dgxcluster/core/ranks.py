"""Which node is which vLLM rank when vLLM spans the nodes with its own executor
(`serve.executor: native`): rank 0 on the head (it serves the API), then the other serving
nodes in placement order (`inventory.placement.serving`: serve.nodes, head first, along the
cables), each running `vllm serve --headless --node-rank R`. Nodes that do not serve have no
rank; `--nnodes` is the number of serving nodes.

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
