"""`dgxcluster verify-ib`: check the RoCE fabric and the NCCL settings before `start`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Optional

import typer

from dgxcluster.cli.state import errors_to_exit, finish, state

if TYPE_CHECKING:
    from rich.console import Console

    from dgxcluster.verify.results import Report


def register(app: typer.Typer) -> None:
    @app.command("verify-ib")
    @errors_to_exit
    def verify_ib(
        ctx: typer.Context,
        node: Annotated[
            Optional[list[str]],  # noqa: UP045
            typer.Option("--node", "-n", help="Only this node (repeatable). Default: all."),
        ] = None,
        bandwidth: Annotated[
            bool,
            typer.Option("--bandwidth", help="Also measure inside the image: ib_write_bw per "
                         "rail, NCCL all_gather/all_reduce busbw and transport (minutes)."),
        ] = False,
        json_out: Annotated[
            bool, typer.Option("--json", help="Print [{node, check, status, detail, fix}]; "
                               "the per-link rows (check `link`) carry their figures in `data`.")
        ] = False,
        min_busbw: Annotated[
            Optional[float],  # noqa: UP045
            typer.Option("--min-busbw", metavar="GBS", min=0.001,
                         help="NCCL busbw floor in GB/s, any number of ranks (default "
                         "fabric.min_busbw_gbs, else 21.875; 10 on a ring or mesh)."),
        ] = None,
    ) -> None:
        """Check RDMA devices, twins, interfaces, addresses, MTU, link speed, jumbo pings over
        every link of the topology (all pairs on a switch, each cable on a ring or mesh),
        what survives a reboot (netplan), and the NCCL/container settings the containers
        will get. Every check says PASS, WARN or FAIL with its evidence and a one-line fix;
        links get a table of their own.

        Exit 0 if nothing failed, 1 if a check failed, 3 if a node was unreachable,
        2 for bad input.
        """
        import json
        import sys

        from dgxcluster.cli.output import LiveNodes
        from dgxcluster.verify import verify_ib as run

        st = state(ctx)
        with st.session("verify-ib") as session:
            targets = session.cluster.select(node)
            with LiveNodes(targets, "verify-ib", show_lines=False) as live:
                report = run(session, targets, bandwidth=bandwidth, min_busbw=min_busbw,
                             progress=live)
        if json_out:
            sys.stdout.write(json.dumps(report.to_json(), indent=2) + "\n")
        else:
            _print(report)
        finish(report.outcomes)


def _print(report: Report) -> None:
    from rich.markup import escape
    from rich.table import Table

    from dgxcluster.cli.output import STATUS_STYLE, console

    out = console()
    if not out.is_terminal:  # logs and CI: wide rows read better than wrapped cells
        from rich.console import Console

        out = Console(highlight=False, soft_wrap=False, width=160)
    t = Table(title="verify-ib", title_justify="left", show_lines=False)
    for col in ("node", "check", "status", "detail"):
        t.add_column(col, overflow="fold")
    for r in report.results:
        if r.check == "link":
            continue
        style = STATUS_STYLE.get(r.status.value, "")
        t.add_row(escape(r.node), escape(r.check), f"[{style}]{r.status.value}[/{style}]",
                  escape(r.detail))
    out.print(t)
    _print_links(out, report)
    problems = [r for r in report.results if r.status.value != "PASS"]
    for r in problems:
        out.print(f"[bold]{escape(r.node)} {escape(r.check)}[/bold] {r.status.value}: "
                  f"fix: {escape(r.fix)}",
                  markup=True, highlight=False)
    counts = {s: sum(1 for r in report.results if r.status.value == s)
              for s in ("PASS", "WARN", "FAIL")}
    summary = ", ".join(f"{n} {s}" for s, n in counts.items())
    if report.unreachable:
        summary += f"; unreachable: {', '.join(report.unreachable)}"
    if report.simulated:
        summary += (f"; {', '.join(report.simulated)}: simulated hardware (testbed), "
                    "not a real fabric")
    out.print(f"verify-ib: {summary}", highlight=False, markup=False)


def _way(x: object) -> str:
    if not isinstance(x, dict):
        return "-"
    if x.get("ok"):
        rtt = x.get("rtt_ms")
        return f"ok {rtt:.2f} ms" if isinstance(rtt, float) else "ok"
    return str(x.get("error") or "no reply")


def _print_links(out: Console, report: Report) -> None:
    """One row per link: both ends, both ping directions, MTU, speed and RDMA state."""
    from rich.markup import escape
    from rich.table import Table

    from dgxcluster.cli.output import STATUS_STYLE

    rows = [r for r in report.results if r.check == "link" and r.data]
    if not rows:
        return
    t = Table(title="links", title_justify="left", show_lines=False)
    for col in ("link", "subnet", "a -> b", "b -> a", "mtu", "Mb/s", "rdma", "status"):
        t.add_column(col, overflow="fold")
    for r in rows:
        d = dict(r.data or {})
        a, b = d.get("a", {}), d.get("b", {})
        pair = [a, b]
        style = STATUS_STYLE.get(r.status.value, "")
        t.add_row(f"{escape(str(d.get('segment')))}: {escape(r.node)}", str(d.get("subnet")),
                  escape(_way(d.get("ping_a_to_b"))), escape(_way(d.get("ping_b_to_a"))),
                  "/".join(str(e.get("mtu", "?")) for e in pair),
                  "/".join(str(e.get("speed_mbps") or "?") for e in pair),
                  "/".join(str(e.get("rdma_state") or "?") for e in pair),
                  f"[{style}]{r.status.value}[/{style}]")
    out.print(t)
