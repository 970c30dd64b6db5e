"""`dgxcluster metrics targets`: a Prometheus scrape config for the cluster (contacts nothing)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from dgxcluster.cli.state import errors_to_exit, state

FORMATS = ("yaml", "file-sd")

metrics_app = typer.Typer(
    name="metrics",
    help="Point your own Prometheus/Grafana at the cluster's vLLM and Ray metrics.",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    app.add_typer(metrics_app, name="metrics")


@metrics_app.command("targets")
@errors_to_exit
def targets_cmd(
    ctx: typer.Context,
    fmt: Annotated[
        str, typer.Option("--format", "-f", help="`yaml`: a scrape_configs block for "
                          "prometheus.yml. `file-sd`: JSON target groups for file_sd_configs.")
    ] = "yaml",
    output: Annotated[
        Optional[Path],  # noqa: UP045 - typer needs Optional on 3.10
        typer.Option("--output", "-o", help="Write to this file instead of stdout.",
                     show_default=False),
    ] = None,
) -> None:
    """Print where Prometheus scrapes the cluster: vLLM's /metrics on the head node
    (`serve.port`) and Ray's metrics agent on every node (`ray.metrics_export_port`), at each
    node's `host`, labelled with cluster, node and role. Reads the inventory only."""
    from dgxcluster.errors import UsageError
    from dgxcluster.metrics import targets

    if fmt not in FORMATS:
        raise UsageError(f"must be one of {', '.join(FORMATS)}", "--format")
    inv = state(ctx).inventory()
    text = targets.scrape_config(inv) if fmt == "yaml" else targets.file_sd(inv)
    if output is None:
        typer.echo(text, nl=False)
        return
    try:
        output.write_text(text)
    except OSError as exc:
        raise UsageError(f"cannot write {output}: {exc.strerror or exc}", "--output") from None
    typer.echo(f"wrote {output}", err=True)
