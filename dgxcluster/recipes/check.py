"""Check a recipe's flags against the argument table of the vLLM release it names, beside the
flags dgxcluster generates from the recipe's own keys (a recipe flag repeating one is refused).
The generated argv comes from the caller (serving's `serve_command`), so recipes stay below
serving in the layers."""

from __future__ import annotations

from collections.abc import Sequence

from dgxcluster.recipes.schema import Recipe
from dgxcluster.vllmcli.snapshot import load
from dgxcluster.vllmcli.validate import Fragment, Problem, check


def check_recipe(recipe: Recipe, generated: Sequence[str]) -> list[Problem]:
    """Problems with `recipe.flags` in its vLLM release; `generated` is what dgxcluster passes
    after `vllm serve` for this recipe (model first)."""
    return check(load(recipe.vllm), [Fragment(f"recipe {recipe.name}: flags", recipe.flags)],
                 generated=generated)
