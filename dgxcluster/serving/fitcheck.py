"""Will it fit? `start`'s model check, plus each node's memory against the served weights.

Asking a DGX Spark for more than it has does not fail cleanly: the box can freeze (NVIDIA
dgx-spark-playbooks issue #102). So before anything starts, every node's share of the weights
(the safetensors files the model check already found in its HF cache, split over TP x PP
ranks, one per node) is compared with `gpu_memory_utilization` x its memory, read from the node
in the same preflight fan-out (`/proc/meminfo`: on GB10 the GPU's memory is the system's).
A node where it cannot fit fails the preflight with the numbers; `--force` starts anyway.

It wraps the model check (`NodeCheck`, handed in by the CLI), so `start` needs no new stage:
each node answers both in the preflight's one fan-out, then all are judged together.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from dgxcluster.core import docker
from dgxcluster.core.units import human_bytes
from dgxcluster.errors import DgxClusterError
from dgxcluster.facts import ParseError, meminfo
from dgxcluster.serving.preflight import NodeCheck
from dgxcluster.vllmcli import fit

if TYPE_CHECKING:
    from dgxcluster.core.nodepaths import NodePaths
    from dgxcluster.inventory.schema import InventoryModel
    from dgxcluster.remote.connection import Connection


class WeightsCheck(NodeCheck, Protocol):
    """A model check that also says how many bytes of weights the served revision has
    (`models.check.StartModelCheck`), from the answers its `read` gave."""

    def weights(self, answers: Mapping[str, object]) -> int | None:
        """Bytes of the weight files; None when unknown."""


@dataclass(frozen=True)
class _Answer:
    model: object
    memory: meminfo.Memory | str


def read_memory(conn: Connection) -> meminfo.Memory | str:
    """The node's memory (one round trip); a failure is an answer (what went wrong), not an
    exception."""
    try:
        res = conn.run(meminfo.ARGV, timeout=docker.QUICK_S)
    except DgxClusterError as exc:
        return f"could not read /proc/meminfo: {exc}"
    if not res.ok:
        return f"could not read /proc/meminfo: {res.stderr.strip()[:200]}"
    try:
        return meminfo.parse(res.stdout)
    except ParseError as exc:
        return f"could not parse /proc/meminfo: {exc}"


def _g(n: int) -> str:
    return human_bytes(n, binary=True)


@dataclass(frozen=True)
class FitCheck:
    """`inner` (the model check) and, where it passes, the fit on each node (a `NodeCheck`)."""

    inner: WeightsCheck
    tensor_parallel_size: int
    pipeline_parallel_size: int = 1
    gpu_memory_utilization: float | None = None
    memory_gb: int | None = None  # the Spark variant the recipe was measured on
    recipe: str = ""
    force: bool = False

    @property
    def label(self) -> str:
        return self.inner.label

    @property
    def skip_reason(self) -> str:
        return self.inner.skip_reason

    def read(self, conn: Connection, paths: NodePaths) -> object:
        return _Answer(self.inner.read(conn, paths), read_memory(conn))

    def judge(self, answers: Mapping[str, object]) -> dict[str, tuple[bool, str]]:
        inner = {n: a.model if isinstance(a, _Answer) else a for n, a in answers.items()}
        verdicts = self.inner.judge(inner)
        weights = self.inner.weights(inner)
        out: dict[str, tuple[bool, str]] = {}
        for node, (fine, text) in verdicts.items():
            answer = answers.get(node)
            if not fine or not isinstance(answer, _Answer):
                out[node] = (fine, text)
            else:
                ok, said = self.fits(weights, answer.memory)
                out[node] = (ok, f"{text}; {said}")
        return out

    def fits(self, weights: int | None, memory: meminfo.Memory | str) -> tuple[bool, str]:
        """(start here?, what to show) for one node."""
        if weights is None:
            return True, "fit not estimated (no safetensors files in the snapshot)"
        if isinstance(memory, str):
            return True, f"fit not estimated ({memory})"
        est = fit.estimate(weights, tensor_parallel_size=self.tensor_parallel_size,
                           pipeline_parallel_size=self.pipeline_parallel_size,
                           total_bytes=memory.total_bytes,
                           gpu_memory_utilization=self.gpu_memory_utilization)
        note = self._variant_note(memory.total_bytes)
        if est.fits:
            return True, (f"fits: {_g(est.per_node_weights)} of weights per node in "
                          f"{est.gpu_memory_utilization:g} x {_g(est.total)}, "
                          f"~{_g(est.kv_cache)} left for the KV cache{note}")
        if self.force:
            return True, f"{est.summary()}{note}; starting anyway (--force)"
        return False, (f"{est.summary()} (at least {_g(fit.MIN_KV)} needed){note}; serve it on "
                       "more nodes (serve.tensor_parallel_size / pipeline_parallel_size), "
                       "raise serve.gpu_memory_utilization if the node has room, or start "
                       "with --force to try anyway")

    def _variant_note(self, total: int) -> str:
        variant = meminfo.spark_variant(total)
        if self.memory_gb is None or variant == self.memory_gb:
            return ""
        has = f"{variant} GB Spark" if variant else f"{_g(total)} of memory"
        return f" (recipe {self.recipe} is for {self.memory_gb} GB Sparks; this node is a {has})"


def for_inventory(inner: WeightsCheck, inv: InventoryModel, *, memory_gb: int | None = None,
                  recipe: str = "", force: bool = False) -> NodeCheck:
    """The model check with the fit check around it, for the inventory's serve settings."""
    s = inv.serve
    return FitCheck(inner, s.tensor_parallel_size, s.pipeline_parallel_size,
                    s.gpu_memory_utilization, memory_gb, recipe, force)
