"""`dgxcluster logs`: collect every node's logs into one folder and archive, or follow them."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from dgxcluster.cli.state import errors_to_exit, finish, interrupt_on_signals, state


def register(app: typer.Typer) -> None:
    @app.command("logs")
    @errors_to_exit
    def logs(
        ctx: typer.Context,
        node: Annotated[
            Optional[list[str]],  # noqa: UP045
            typer.Option("--node", "-n", help="Only this node (repeatable). Default: all."),
        ] = None,
        since: Annotated[
            Optional[str],  # noqa: UP045
            typer.Option("--since", help="Only logs newer than this: 90s, 10m, 1h30m, 2d."),
        ] = None,
        output: Annotated[
            Path,
            typer.Option("--output", "-o", help="Folder that receives the bundle."),
        ] = Path("dgxcluster-logs"),
        follow: Annotated[
            bool,
            typer.Option("--follow", "-f", help="Stream every node's container logs live "
                         "(prefixed by node) until Ctrl-C, instead of collecting."),
        ] = False,
    ) -> None:
        """Collect every node's logs at once into `DIR/<cluster>-<UTC time>/<node>/` and a .tar.gz.

        Per node: each dgxcluster container's logs, `docker inspect`, Ray's session logs,
        dgxcluster's log folder (the vLLM server log), and host facts (nvidia-smi -q,
        ibv_devinfo -v, ip -d addr, ethtool of the fabric interfaces, uname, df, free,
        dmesg tail). Secrets are redacted. manifest.json lists files, sizes, errors and
        durations. Exit 0 when every node was collected, 3 if a node was unreachable,
        1 if a node's collection failed (the bundle is written in every case).
        """
        from dgxcluster.core.durations import parse_duration
        from dgxcluster.errors import UsageError

        since_s = 0
        if since is not None:
            try:
                since_s = parse_duration(since)
            except ValueError as exc:
                raise UsageError(str(exc), "--since") from None
        st = state(ctx)
        if follow:
            _follow(st.session("logs"), node, since_s)
            return
        from dgxcluster.logs.collect import prepare_output

        prepare_output(output)
        _collect(st.session("logs"), node, since_s, output)


def _collect(session: object, node: list[str] | None, since_s: int, output: Path) -> None:
    from rich.table import Table

    from dgxcluster.cli.output import LiveNodes
    from dgxcluster.cli.reportout import report_console
    from dgxcluster.core.session import Session
    from dgxcluster.core.units import human_bytes
    from dgxcluster.logs.collect import collect

    assert isinstance(session, Session)
    with session:
        targets = session.cluster.select(node)
        with LiveNodes(targets, "collecting logs", show_lines=False) as live:
            bundle = collect(session, targets, out_dir=output, since_s=since_s, progress=live)
    table = Table(title=f"logs of cluster {session.inventory.cluster}", title_justify="left")
    for col in ("node", "result", "files", "size", "time", "item errors"):
        table.add_column(col)
    for name, rep in bundle.nodes.items():
        if not rep.reachable:
            result = f"[bold red]unreachable[/bold red]: {rep.error}"
        elif rep.error:
            result = f"[bold red]failed[/bold red]: {rep.error}"
        else:
            result = "[green]collected[/green]"
        size = sum(s for _, s in rep.files)
        errs = ", ".join(n.rsplit("/", 1)[-1] for n, _ in rep.item_errors) or "-"
        table.add_row(name, result, str(len(rep.files)), human_bytes(size),
                      f"{rep.duration_s:.1f}s", errs)
    out = report_console()
    out.print(table)
    out.print(f"bundle:   {bundle.folder}\nmanifest: {bundle.manifest}\narchive:  {bundle.archive}",
              highlight=False, soft_wrap=True)
    finish(bundle.outcomes)


def _follow(session: object, node: list[str] | None, since_s: int) -> None:
    import sys
    import threading

    from dgxcluster.core.session import Session
    from dgxcluster.core.steps import Outcome, Status
    from dgxcluster.logs.follow import follow

    assert isinstance(session, Session)
    lock = threading.Lock()

    def emit(node_name: str, container: str, line: str) -> None:
        with lock:
            sys.stdout.write(f"{node_name}[{container}]: {line}\n")
            sys.stdout.flush()

    def note(text: str) -> None:
        with lock:
            sys.stderr.write(text + "\n")
            sys.stderr.flush()

    interrupt_on_signals()  # Ctrl-C/SIGTERM end --follow cleanly (remote followers stopped)
    with session:
        result = follow(session, node, since_s=since_s, on_line=emit, on_note=note)
    finish(Outcome(n, "follow", Status.UNREACHABLE, why) for n, why in result.unreachable.items())
