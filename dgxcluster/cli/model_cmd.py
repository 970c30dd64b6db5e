"""`dgxcluster model pull|sync|ls`: stage model weights on every node once, verified."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Optional

import typer

from dgxcluster.cli.state import errors_to_exit, finish, interrupt_on_signals, state

if TYPE_CHECKING:
    from dgxcluster.models.presence import Presence
    from dgxcluster.models.sync import SyncReport

MODEL_HELP = "Hugging Face model id, e.g. Qwen/Qwen3-8B."

model_app = typer.Typer(
    name="model",
    help="Stage model weights on every node: download once, copy node to node, verified.",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    app.add_typer(model_app, name="model")


def _print_sync(report: SyncReport, json_out: bool) -> None:
    import json
    import sys

    from dgxcluster.cli.output import outcome_table
    from dgxcluster.core.steps import Status
    from dgxcluster.core.units import human_bytes

    if json_out:
        sys.stdout.write(json.dumps(report.to_json(), indent=2) + "\n")
        return
    outcome_table(f"model sync {report.model} (from {report.source})", report.outcomes)
    changed = sum(1 for o in report.outcomes if o.status is Status.CHANGED)
    print(f"{report.model}: {changed} node(s) changed, {report.streams} stream(s), "
          f"{human_bytes(report.bytes_received)} received, {report.seconds:.1f}s")


@model_app.command("sync", no_args_is_help=True)
@errors_to_exit
def sync_cmd(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(help=MODEL_HELP, show_default=False)],
    source: Annotated[
        Optional[str],  # noqa: UP045 - typer needs Optional on 3.10
        typer.Option("--from", help="Node to copy from. Default: the head."),
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Copy MODEL's whole HF cache entry from one node to every other node, in parallel.

    Node to node over the fabric, never via this machine. Files a peer already holds
    (verified) are not sent again; every receiver hashes each blob against its name. A
    mismatch is copied once more, then reported as failed. Exit 0 if every node ends
    complete, 1 if one failed, 3 if one was unreachable.
    """
    from dgxcluster.cli.output import LiveNodes
    from dgxcluster.errors import UsageError
    from dgxcluster.models.repoid import RepoId
    from dgxcluster.models.sync import sync

    interrupt_on_signals(sigint="terminal")
    repo = RepoId.parse(model)
    st = state(ctx)
    inv = st.inventory()
    if source is not None and source not in inv.names:
        raise UsageError(f"unknown node {source!r} (inventory has: {', '.join(inv.names)})",
                         "--from")
    with st.session("model-sync") as session, \
            LiveNodes(inv.names, f"model sync {repo}", show_lines=False) as live:
        report = sync(session, repo, source, progress=live)
    _print_sync(report, json_out)
    finish(report.outcomes)


@model_app.command("pull", no_args_is_help=True)
@errors_to_exit
def pull_cmd(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(help=MODEL_HELP, show_default=False)],
    revision: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option("--revision", help="Branch, tag or commit. Default: main."),
    ] = None,
    no_sync: Annotated[
        bool, typer.Option("--no-sync", help="Only download on the head; do not copy.")
    ] = False,
) -> None:
    """Download MODEL on the head (hf download, in the image, into the HF cache the
    containers mount), then copy it to every other node (as `model sync`).

    HF_TOKEN (from your environment or secrets.file) reaches the container only through
    a 0600 env-file, deleted afterwards.
    """
    from dgxcluster.cli.output import LiveNodes
    from dgxcluster.models.pull import pull
    from dgxcluster.models.repoid import RepoId, check_revision

    repo = RepoId.parse(model)
    rev = check_revision(revision)
    st = state(ctx)
    inv = st.inventory()
    with st.session("model-pull") as session, \
            LiveNodes(inv.names, f"model pull {repo}", show_lines=False) as live:
        report = pull(session, repo, rev, progress=live, then_sync=not no_sync)
    at = f" @ {report.commit}" if report.commit else ""
    print(f"{report.model}{at}: downloaded on {report.node} in {report.seconds:.1f}s")
    if report.sync is None:
        return
    _print_sync(report.sync, False)
    finish(report.sync.outcomes)


@model_app.command("ls")
@errors_to_exit
def ls_cmd(
    ctx: typer.Context,
    json_out: Annotated[bool, typer.Option("--json", help="Print rows as JSON.")] = False,
) -> None:
    """Each model in any node's HF cache, per node: revision, size, complete, verified.

    Complete: the node has every file of that revision that any node has, each at its
    right size, none known corrupt. Verified: every blob passed a hash check here and has
    not changed since. Reads only; hashes nothing. Exit 3 if a node was unreachable.
    """
    import json
    import sys

    from dgxcluster.core.steps import Outcome, Status
    from dgxcluster.models.check import list_models

    with state(ctx).session("model-ls") as session:
        rows = list_models(session)
    if json_out:
        sys.stdout.write(json.dumps([r.to_json() for r in rows], indent=2) + "\n")
    else:
        _ls_table(rows)
    finish(Outcome(r.node, "model-ls", Status.UNREACHABLE, r.reason)
           for r in rows if r.unreachable)


def _ls_table(rows: list[Presence]) -> None:
    from rich.table import Table

    from dgxcluster.cli.output import console
    from dgxcluster.core.units import human_bytes

    if not rows:
        print("no models in any node's HF cache")
        return
    t = Table(title="models", title_justify="left")
    for col in ("model", "node", "revision", "files", "size"):
        t.add_column(col, no_wrap=True)
    t.add_column("complete", no_wrap=True)
    t.add_column("verified", no_wrap=True)
    t.add_column("note", overflow="fold")
    for r in rows:
        rev = (r.commit or "-")[:8] + (f" {','.join(r.refs)}" if r.refs else "")
        t.add_row(r.model, r.node, rev, str(r.files) if r.files else "-",
                  human_bytes(r.size) if r.size else "-",
                  "[green]yes[/green]" if r.complete else "[bold red]NO[/bold red]",
                  "[green]yes[/green]" if r.verified else "no", r.reason)
    out = console()
    if not out.is_terminal:
        out.width = 200  # one row per line when piped (use --json to parse)
    out.print(t)
