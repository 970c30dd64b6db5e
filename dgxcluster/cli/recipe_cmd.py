"""`dgxcluster recipe ls|show|import`: models with their published flags, checked against vLLM."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from dgxcluster.cli.state import errors_to_exit

if TYPE_CHECKING:
    from dgxcluster.recipes.schema import Recipe

recipe_app = typer.Typer(
    name="recipe",
    help="Recipes: a model with the vLLM flags, topology and environment published for it on "
         "DGX Sparks, every flag checked against vLLM's own argument table.",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    app.add_typer(recipe_app, name="recipe")


def _json(doc: Any) -> None:
    import json
    import sys

    sys.stdout.write(json.dumps(doc, indent=2) + "\n")


def generated_argv(recipe: Recipe) -> list[str]:
    """What dgxcluster passes after `vllm serve` for this recipe's model and topology (on
    placeholder nodes: only the serve settings matter), as `start --recipe` would merge it."""
    from dgxcluster.inventory.schema import InventoryModel
    from dgxcluster.recipes.merge import apply
    from dgxcluster.serving.flagcheck import generated

    inv = InventoryModel.model_validate({
        "nodes": [{"name": f"node{i + 1}", "host": f"node{i + 1}", "fabric_ip": f"10.0.0.{i + 1}"}
                  for i in range(recipe.nodes)]})
    return generated(apply(inv, recipe, environ={}, lenient=True).inventory)


def _problems(recipe: Recipe) -> list[str]:
    """`error: ...` / `warning: ...` lines for the recipe's flags."""
    from dgxcluster.recipes.check import check_recipe

    return [f"{p.severity}: {p}" for p in check_recipe(recipe, generated_argv(recipe))]


@recipe_app.command("ls")
@errors_to_exit
def ls_cmd(json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """List the built-in recipes: name, model, nodes, Spark memory, executor, vLLM release."""
    from dgxcluster.recipes.catalog import builtin

    recipes = builtin()
    if json_out:
        _json([r.model_dump(mode="json") for r in recipes.values()])
        return
    from rich.console import Console
    from rich.table import Table

    t = Table(title="recipes (dgxcluster recipe show NAME)")
    for col in ("name", "model", "nodes", "memory", "executor", "TP x PP x DP", "vLLM"):
        t.add_column(col, no_wrap=col in ("name", "model"), overflow="fold")
    for r in recipes.values():
        t.add_row(r.name, r.model, str(r.nodes), f"{r.memory_gb} GB", r.executor,
                  f"{r.tensor_parallel_size} x {r.pipeline_parallel_size} x {r.data_parallel_size}",
                  r.vllm)
    Console().print(t)


@recipe_app.command("show", no_args_is_help=True)
@errors_to_exit
def show_cmd(
    name: Annotated[str, typer.Argument(help="A recipe name (see `recipe ls`) or a recipe file.",
                                        show_default=False)],
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Show one recipe and check its flags against its vLLM release's argument table.

    Exit 0 if the flags check out, 2 if vLLM would refuse them (each problem is named).
    """
    import shlex

    import yaml

    from dgxcluster.cli.exitcodes import EXIT_USAGE
    from dgxcluster.recipes.catalog import get

    recipe = get(name, "NAME")
    problems = _problems(recipe)
    command = ["vllm", "serve", *generated_argv(recipe), *recipe.flags]
    if json_out:
        _json({**recipe.model_dump(mode="json"), "command": command, "problems": problems})
    else:
        print(yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False, width=100), end="")
        print(f"# command (default serve.host/port): {shlex.join(command)}")
        print(f"# flags checked against vLLM {recipe.vllm}: "
              + ("ok" if not problems else f"{len(problems)} problem(s)"))
        for p in problems:
            print(f"#   {p}")
    if any(p.startswith("error") for p in problems):
        raise typer.Exit(EXIT_USAGE)


@recipe_app.command("import", no_args_is_help=True)
@errors_to_exit
def import_cmd(
    file: Annotated[Path, typer.Argument(help="A spark-vllm-docker recipe (YAML).", show_default=False)],
    vllm: Annotated[
        Optional[str],  # noqa: UP045 - typer needs Optional on 3.10
        typer.Option("--vllm", help="vLLM release to read its flags against (default: the newest "
                     "snapshot older or equal to the default image's, 0.20.1)."),
    ] = None,
    memory_gb: Annotated[int, typer.Option("--memory-gb", help="Spark variant: 128 or 64.")] = 128,
    output: Annotated[
        Optional[Path],  # noqa: UP045
        typer.Option("--output", "-o", help="Write the recipe here instead of stdout."),
    ] = None,
) -> None:
    """Convert a recipe of the community launcher eugr/spark-vllm-docker (`run-recipe.sh`).

    What has no equivalent is refused, not dropped: `mods` (patches to vLLM in the image),
    `build_args` (a different image), single-node recipes, commands other than `vllm serve`.
    The result is checked like any recipe; exit 2 if it cannot be converted or vLLM would
    refuse its flags.
    """
    import yaml

    from dgxcluster.errors import UsageError
    from dgxcluster.recipes.catalog import parse
    from dgxcluster.recipes.importer import convert
    from dgxcluster.vllmcli.snapshot import load

    if memory_gb not in (128, 64):
        raise UsageError("must be 128 or 64", "--memory-gb")
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read {file}: {exc}", "FILE") from None
    try:
        snap = load("0.20.1" if vllm is None else vllm)
    except UsageError as exc:
        raise UsageError(str(exc).removeprefix("vllm version: "), "--vllm") from None
    doc = convert(text, str(file), snap, memory_gb=memory_gb)
    out = yaml.safe_dump(doc, sort_keys=False, width=100)
    recipe = parse(out, f"{file} (converted)")
    problems = _problems(recipe)
    for p in problems:
        import sys

        sys.stderr.write(f"{p}\n")
    if any(p.startswith("error") for p in problems):
        raise UsageError("the converted recipe's flags would be refused by vLLM (above)", "FILE")
    if output:
        try:
            output.write_text(out)
        except OSError as exc:
            raise UsageError(f"cannot write {output}: {exc}", "--output") from None
        print(f"wrote {output}")
    else:
        print(out, end="")
