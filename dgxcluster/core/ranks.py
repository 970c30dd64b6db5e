"""Which node is which vLLM rank when vLLM spans the nodes with its own executor
(`serve.executor: native`): rank 0 on the head (it serves the API), then the other nodes in
inventory order, each running `vllm serve --headless --node-rank R`.

`start` passes the numbers to vLLM, `status` shows them: both ask here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dgxcluster.inventory.schema import InventoryModel


def node_ranks(inv: InventoryModel) -> dict[str, int]:
    """node -> its `--node-rank`: the head 0, the others 1.. in inventory order."""
    others = [n for n in inv.names if n != inv.head_name]
    return {inv.head_name: 0, **{n: i for i, n in enumerate(others, start=1)}}


def headless(inv: InventoryModel) -> list[str]:
    """The nodes that run `--headless` (every node but the head), in rank order."""
    return [n for n in inv.names if n != inv.head_name]
