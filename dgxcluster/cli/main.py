"""`dgxcluster` entry point: global options, then one module per command.

Command modules import only typer at load time; each command imports its capability
when it runs, so `dgxcluster --help` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from dgxcluster import __version__
from dgxcluster.cli.state import CliState

app = typer.Typer(
    name="dgxcluster",
    help=(
        "Run a small cluster of NVIDIA DGX Spark machines as one vLLM inference server, "
        "over SSH, from one inventory file (default inventory/cluster.yaml)."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"dgxcluster {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    ctx: typer.Context,
    inventory: Annotated[
        Optional[Path],  # noqa: UP045 - typer needs Optional on 3.10
        typer.Option(
            "--inventory",
            "-i",
            help="Inventory file. Default: $DGXCLUSTER_INVENTORY, else inventory/cluster.yaml.",
            show_default=False,
        ),
    ] = None,
    verbose: Annotated[
        int,
        typer.Option(
            "--verbose", "-v", count=True, help="Show every remote command (secrets masked)."
        ),
    ] = 0,
    log_format: Annotated[
        str,
        typer.Option(
            "--log-format",
            help="Log lines on stderr: 'console' for people, 'json' for machines.",
        ),
    ] = "console",
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    from dgxcluster.cli.output import mask_output

    mask_output()
    if log_format not in ("console", "json"):
        raise typer.BadParameter("must be 'console' or 'json'", param_hint="--log-format")
    ctx.obj = CliState(inventory_path=inventory, verbose=verbose, log_format=log_format)


#: Command modules, in the order `--help` lists them; each has `register(app)`.
COMMANDS = (
    "nodes_cmd",
    "exec_cmd",
    "build_cmd",
    "verify_cmd",
    "fabric_cmd",
    "start_cmd",
    "status_cmd",
    "logs_cmd",
    "smoke_cmd",
    "bench_cmd",
    "metrics_cmd",
    "model_cmd",
    "recipe_cmd",
    "warm_cmd",
)


def _register() -> None:
    import importlib

    for name in COMMANDS:
        importlib.import_module(f"dgxcluster.cli.{name}").register(app)


_register()


def run() -> None:
    """Console-script entry point."""
    app()
