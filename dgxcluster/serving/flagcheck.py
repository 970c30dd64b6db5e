"""Check every `vllm serve` flag `start` would pass, against the image's own vLLM release.

Before any node is touched: the recipe's flags and `serve.extra_args`, beside what dgxcluster
generates, against the snapshot of the vLLM release the image is built with
(`core.imagevllm`: image.build_args.VLLM_VERSION, else the Dockerfile's ARG). With no snapshot
of that release the nearest older one is used, with a note saying so (a flag added since may be
refused: `--skip-flag-check` lets it through); a release older than every snapshot is refused.
A recipe naming a newer vLLM than the image (`min_vllm`) is refused too.

With `skip` (start --skip-flag-check) the same problems are reported, none refused: vLLM then
judges the command line itself and `start` fails fast with its log if it refuses it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TypeVar

from dgxcluster.core.imagevllm import image_vllm
from dgxcluster.errors import UsageError
from dgxcluster.inventory import placement
from dgxcluster.inventory.schema import InventoryModel
from dgxcluster.recipes.merge import Merged
from dgxcluster.serving import dataparallel
from dgxcluster.serving.plan import serve_command
from dgxcluster.vllmcli import snapshot, validate
from dgxcluster.vllmcli.validate import Fragment, Problem

M = TypeVar("M", bound=InventoryModel)


@dataclass(frozen=True)
class FlagReport:
    """What the check found, and against which vLLM release."""

    image_vllm: str | None  # the release the image is built with (None: not known)
    where: str  # where that was read
    checked_against: str | None  # the snapshot used (None: none usable, skipped)
    note: str = ""  # why the snapshot is not the image's own release
    problems: list[Problem] = field(default_factory=list)
    skipped: bool = False

    @property
    def errors(self) -> list[Problem]:
        return validate.errors(self.problems)

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "warning"]

    def summary(self) -> str:
        if self.checked_against is None:
            return "vLLM flags not checked (--skip-flag-check)"
        verdict = (f"{len(self.errors)} error(s)" if self.errors else "ok") + (
            f", {len(self.warnings)} warning(s)" if self.warnings else "")
        passed = "; passed unchecked (--skip-flag-check)" if self.skipped and self.errors else ""
        return f"vLLM flags checked against vLLM {self.checked_against}: {verdict}{passed}"


def generated(inv: InventoryModel) -> list[str]:
    """What dgxcluster itself passes after `vllm serve` (model first), free-form flags left out.
    Without serve.model (an inventory being written; `nodes` checks it) the flags are checked
    around a placeholder: `start` refuses the missing model itself."""
    serve = inv.serve.model_copy(update={"extra_args": [], "model": inv.serve.model or "MODEL"})
    bare = inv.model_copy(update={"serve": serve})
    return serve_command(bare)[2:]


def _min_vllm(merged: Merged[M], version: str | None, where: str) -> list[Problem]:
    recipe = merged.recipe
    if recipe is None:
        return []
    if version is None:
        return [Problem(merged.label, "", f"needs vLLM {recipe.min_vllm} or newer; the image's "
                        f"release is not known ({where})", "warning")]
    if snapshot.release(version) < snapshot.release(recipe.min_vllm):
        return [Problem(merged.label, "", f"needs vLLM {recipe.min_vllm} or newer (min_vllm), but "
                        f"the image has vLLM {version} ({where}): build an image with a newer base "
                        "(images/README.md)")]
    return []


def _replicas_for_release(inv: InventoryModel, version: str | None, where: str) -> list[Problem]:
    """Replicas that span nodes, more of them than a replica has nodes: vLLM up to 0.27 keeps
    the leader's --nnodes k (dataparallel.rescopes), so its nnodes_within_dp is k // DP = 0
    and the engine fails dividing by it (vllm/config/parallel.py, 0.27.1). Refused here,
    before any node is touched."""
    if inv.serve.data_parallel_size == 1 or placement.problem(inv) is not None:
        return []
    p = placement.place(inv)
    if p.nodes_per_replica == 1 or p.dp <= p.nodes_per_replica or dataparallel.rescopes(version):
        return []
    return [Problem("serve.data_parallel_size", "", (
        f"{p.dp} replicas of {p.nodes_per_replica} nodes each need vLLM 0.28 or newer: "
        f"vLLM {version} ({where}) runs at most {p.nodes_per_replica} replicas that span "
        f"{p.nodes_per_replica} nodes (its nnodes_within_dp would be 0); build an image with "
        "a newer base (images/README.md) or use fewer replicas"))]


def check(merged: Merged[M], *, skip: bool = False) -> FlagReport:
    """Every problem with the flags `start` would pass for `merged` (see the module docstring)."""
    inv = merged.inventory
    img = image_vllm(inv)
    try:
        choice = snapshot.for_version(img.version, img.where)
    except UsageError as exc:
        if not skip:
            raise
        return FlagReport(img.version, img.where, None, str(exc), skipped=True)
    fragments = []
    if merged.recipe_flags:
        fragments.append(Fragment(f"{merged.label}: flags", merged.recipe_flags))
    if merged.own_flags:
        fragments.append(Fragment("serve.extra_args", merged.own_flags))
    problems = validate.check(choice.snapshot, fragments, generated=generated(inv),
                              owners=validate.GENERATED_OWNERS)
    problems += _min_vllm(merged, img.version, img.where)
    problems += _replicas_for_release(inv, img.version, img.where)
    return FlagReport(img.version, img.where, choice.snapshot.version, choice.note, problems, skip)


def enforce(report: FlagReport, source: str) -> None:
    """InventoryError (exit 2) naming `source` for the errors, unless they were let through."""
    if not report.skipped:
        validate.raise_for(report.problems, source)
