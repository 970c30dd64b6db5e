"""`dgxcluster fabric plan | apply`: each node's CX-7 netplan file, from the inventory."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Optional

import typer

from dgxcluster.cli.state import errors_to_exit, finish, state

if TYPE_CHECKING:
    from dgxcluster.fabricsetup.apply import FabricReport

fabric_app = typer.Typer(
    name="fabric",
    help="Set up the CX-7 fabric from the inventory: each node's /etc/netplan/40-cx7.yaml "
         "(static addresses per rail or cable, MTU, no DHCP).",
    no_args_is_help=True,
)
NODE_HELP = "Only this node (repeatable). Default: all."


def register(app: typer.Typer) -> None:
    app.add_typer(fabric_app, name="fabric")


def _print(report: FabricReport, title: str, json_out: bool, diffs: bool) -> None:
    import json
    import sys

    from dgxcluster.cli.output import outcome_table

    if json_out:
        out = [o.to_json() for o in report.outcomes]
        for row in out:
            p = report.plans.get(str(row["node"]))
            if p is not None:
                row.update({"wanted": p.wanted, "diff": p.diff(), "live": p.live,
                            "refusals": p.refusals, "interfaces": p.interfaces})
        sys.stdout.write(json.dumps(out, indent=2) + "\n")
        return
    if diffs:
        for p in report.plans.values():
            text = p.diff()
            if text:
                sys.stdout.write(text if text.endswith("\n") else text + "\n")
    outcome_table(title, report.outcomes)
    if report.rolled_back:
        print(f"rolled back: {', '.join(report.rolled_back)} (previous netplan file and live "
              "addresses restored)")


@fabric_app.command("plan")
@errors_to_exit
def plan_cmd(
    ctx: typer.Context,
    node: Annotated[
        Optional[list[str]],  # noqa: UP045 - typer needs Optional on 3.10
        typer.Option("--node", "-n", help=NODE_HELP),
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print one object per node.")] = False,
) -> None:
    """Show each node's netplan file as the inventory calls for it, as a diff against the
    file the node has, and where its live addresses or MTU differ. Changes nothing.

    Exit 0, or 1 when a node could not be set up (no root or passwordless sudo, no netplan,
    a fabric interface that is the management interface), 3 if a node was unreachable.
    """
    from dgxcluster.cli.output import LiveNodes
    from dgxcluster.fabricsetup.apply import plan

    st = state(ctx)
    with st.session("fabric-plan") as session:
        targets = session.cluster.select(node)
        with LiveNodes(targets, "fabric plan", show_lines=False) as live:
            report = plan(session, targets, progress=live)
    _print(report, "fabric plan", json_out, diffs=True)
    finish(report.outcomes)


@fabric_app.command("apply")
@errors_to_exit
def apply_cmd(
    ctx: typer.Context,
    node: Annotated[
        Optional[list[str]],  # noqa: UP045 - typer needs Optional on 3.10
        typer.Option("--node", "-n", help=NODE_HELP),
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Same as `fabric plan`.")] = False,
    verify_timeout: Annotated[
        float, typer.Option("--verify-timeout", min=1, max=600, metavar="S",
                            help="Seconds for every link to answer before rolling back.")
    ] = 30.0,
    json_out: Annotated[bool, typer.Option("--json", help="Print one object per node.")] = False,
) -> None:
    """Write /etc/netplan/40-cx7.yaml (mode 0600) on every node whose file or live fabric
    differs from the inventory, run `netplan apply`, then ping every link of the changed
    nodes. If a link does not answer within --verify-timeout, every changed node gets its
    previous file and live addresses back. The management interface is never written.
    A second run says "unchanged". Needs root or passwordless sudo on the nodes.

    Exit 0 if every node ends as the inventory says, 1 if one failed or was rolled back,
    3 if a node was unreachable (then nothing is changed anywhere).
    """
    from dgxcluster.cli.output import LiveNodes
    from dgxcluster.fabricsetup.apply import apply, plan

    st = state(ctx)
    title = "fabric plan (dry run)" if dry_run else "fabric apply"
    with st.session("fabric-apply") as session:
        targets = session.cluster.select(node)
        with LiveNodes(targets, title, show_lines=False) as live:
            report = (plan(session, targets, progress=live) if dry_run else
                      apply(session, targets, progress=live, verify_timeout_s=verify_timeout))
    _print(report, title, json_out, diffs=dry_run)
    finish(report.outcomes)
