"""How vLLM spans the nodes, one module per way (`serve.executor`): `ray` (a Ray cluster in
containers, vLLM launched in the head's) and `native` (vLLM's own multiprocessing executor,
one `vllm serve` rank per node). `start` walks its shared stages (preflight, then the
executor's), and asks the executor what to create; everything else is shared.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from dgxcluster.core.stages import Stage
    from dgxcluster.inventory.schema import InventoryModel
    from dgxcluster.serving.start import StartRun


class Executor(Protocol):
    """One start's executor: what to create after preflight, then its stages."""

    name: str

    def decide(self, run: StartRun) -> list[str]:
        """After preflight (the running configuration already compared and, with --restart,
        stopped): the nodes whose container this start creates. Raises on a port in use."""

    def stages(self) -> tuple[Stage[StartRun], ...]:
        """The stages after preflight, up to vLLM answering (the last is `vllm-ready`)."""


def for_inventory(inv: InventoryModel) -> Executor:
    """A fresh executor (it keeps one start's state) for `serve.executor`."""
    if inv.serve.executor == "native":
        from dgxcluster.serving.executors.native import NativeExecutor

        return NativeExecutor()
    from dgxcluster.serving.executors.ray import RayExecutor

    return RayExecutor()
