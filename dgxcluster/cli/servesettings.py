"""What `start` (and `nodes`) say about the serve settings before touching a node: the vLLM flag
check's verdict, and for `--dry-run` every serve setting with where it came from."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from dgxcluster.inventory.load import Inventory
    from dgxcluster.recipes.merge import Merged
    from dgxcluster.serving.flagcheck import FlagReport


def check_flags(merged: Merged[Inventory], skip: bool = False) -> FlagReport:
    """Check the flags `start` would pass; warnings (and, with `skip`, the errors let through)
    on stderr; InventoryError (exit 2) for the errors otherwise."""
    from dgxcluster.serving.flagcheck import check, enforce

    report = check(merged, skip=skip)
    if report.note:
        sys.stderr.write(f"warning: {report.note}\n")
    for p in report.warnings:
        sys.stderr.write(f"warning: {p}\n")
    if report.skipped:
        for p in report.errors:
            sys.stderr.write(f"warning: {p} (passed unchecked: --skip-flag-check)\n")
    enforce(report, str(merged.inventory.source or "<inventory>"))
    return report


def _shown(value: object) -> str:
    import json

    if value is None:
        return "null"
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value)


def settings_lines(merged: Merged[Inventory]) -> list[str]:
    """Every serve setting, and what a recipe set elsewhere, each with where it came from."""
    from dgxcluster.inventory.yamlfile import format_path
    from dgxcluster.recipes.merge import DEFAULT

    inv = merged.inventory
    order = "inventory > " + (f"{merged.label} > " if merged.recipe else "") + "default"
    lines = [f"# serve settings ({order}):"]
    serve = inv.serve.model_dump(mode="json")
    width = max(len(k) for k in serve)
    for key, value in serve.items():
        path = format_path(("serve", key))
        if key == "extra_args" and merged.recipe_flags:
            value = (f"{_shown(list(merged.recipe_flags))} ({merged.label}) + "
                     f"{_shown(list(merged.own_flags))} (serve.extra_args)")
            lines.append(f"  {key:<{width}}  {value}")
            continue
        lines.append(f"  {key:<{width}}  {_shown(value)}  ({merged.origins.get(path, DEFAULT)})")
    for path, origin in sorted(merged.origins.items()):
        if not path.startswith("serve."):
            section, _, name = path.partition(".")
            value = getattr(inv, section).model_dump(mode="json")
            for part in name.split("."):
                value = value.get(part) if isinstance(value, dict) else None
            lines.append(f"  {path} = {_shown(value)}  ({origin})")
    if merged.dropped:
        lines.append(f"  {merged.label} flags left out (serve.extra_args sets the same options): "
                     + " ".join(merged.dropped))
    return lines


def print_settings(merged: Merged[Inventory], report: FlagReport) -> None:
    for line in settings_lines(merged):
        typer.echo(line)
    typer.echo(f"# {report.summary()} (the image's vLLM: {report.image_vllm or 'unknown'}, "
               f"from {report.where})")
