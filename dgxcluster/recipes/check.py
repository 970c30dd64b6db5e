"""Check a recipe's flags against the argument table of the vLLM release it names, beside the
flags dgxcluster generates from the recipe's own keys (a recipe flag repeating one is refused).
The generated argv comes from the caller (serving's `serve_command`), so recipes stay below
serving in the layers."""

from __future__ import annotations

from collections.abc import Sequence

from dgxcluster.recipes.schema import Recipe
from dgxcluster.vllmcli.snapshot import load
from dgxcluster.vllmcli.validate import Fragment, Problem, check


def serve_settings(recipe: Recipe) -> dict[str, object]:
    """The inventory's `serve` keys this recipe sets (what phase-2 merging starts from)."""
    return {"model": recipe.model, "revision": recipe.revision,
            "tensor_parallel_size": recipe.tensor_parallel_size,
            "pipeline_parallel_size": recipe.pipeline_parallel_size,
            "max_model_len": recipe.max_model_len,
            "gpu_memory_utilization": recipe.gpu_memory_utilization}


def check_recipe(recipe: Recipe, generated: Sequence[str]) -> list[Problem]:
    """Problems with `recipe.flags` in its vLLM release; `generated` is what dgxcluster passes
    after `vllm serve` for this recipe (model first)."""
    return check(load(recipe.vllm), [Fragment(f"recipe {recipe.name}: flags", recipe.flags)],
                 generated=generated)
