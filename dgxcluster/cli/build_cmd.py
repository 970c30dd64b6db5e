"""`dgxcluster build`: content-addressed image builds on the nodes, or build once and ship."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from dgxcluster.cli.state import errors_to_exit, finish, state


def register(app: typer.Typer) -> None:
    @app.command("build")
    @errors_to_exit
    def build_(
        ctx: typer.Context,
        all_nodes: Annotated[
            bool, typer.Option("--all-nodes", help="Every node of the inventory (the default).")
        ] = False,
        node: Annotated[
            Optional[list[str]],  # noqa: UP045
            typer.Option("--node", "-n", help="Only this node (repeatable)."),
        ] = None,
        image: Annotated[
            Optional[str],  # noqa: UP045
            typer.Option("--image", help="Image repository to build. Default: image.name."),
        ] = None,
        strategy: Annotated[
            Optional[str],  # noqa: UP045
            typer.Option("--strategy", help="each: build on every node; distribute: build on "
                         "one node, stream to the others. Default: image.strategy.",
                         show_default=False),
        ] = None,
        no_cache: Annotated[
            bool, typer.Option("--no-cache", help="Rebuild even if up to date, without "
                               "docker's layer cache.")
        ] = False,
        dry_run: Annotated[
            bool, typer.Option("--dry-run", help="Say what each node needs; change nothing.")
        ] = False,
        json_out: Annotated[
            bool, typer.Option("--json", help="Print the outcome as JSON (one object per node).")
        ] = False,
    ) -> None:
        """Make every node hold the image of the build context (image.context), or a pulled one.

        The tag is `<image>:ctx-<12 hex>`, a hash of the context (.dockerignore
        respected), Dockerfile and build args; `<image>:current` moves to it.
        Nodes that already hold it report "up to date": nothing is sent or built.
        With image.source: pull, image.ref is pulled on one node (none if a node holds it)
        and shipped to the others; its tag is `<image>:pull-<12 hex>` of the reference,
        every receiver's image ID is checked against the source's, and --no-cache pulls again.
        Exit 0 if every node holds the image, 1 if one failed, 3 if unreachable.
        """
        from dgxcluster.cli.build_report import print_report
        from dgxcluster.cli.output import LiveNodes
        from dgxcluster.errors import UsageError

        if all_nodes and node:
            raise UsageError("give either --all-nodes or --node, not both", "--all-nodes")
        if strategy is not None and strategy not in ("each", "distribute"):
            raise UsageError(f"must be 'each' or 'distribute', not {strategy!r}", "--strategy")
        st = state(ctx)
        inv = st.inventory()
        from dgxcluster.image.run import build

        shown = inv.names if not node else [n for n in inv.names if n in node] or list(node)
        builder = inv.image.build_node or inv.head_name
        if (strategy or inv.image.strategy) == "distribute" and builder not in shown:
            shown = [builder, *shown]
        title = "build (dry run)" if dry_run else "build"
        with st.session("build") as session, LiveNodes(shown, title, show_lines=True) as live:
            report = build(session, nodes=node, image=image, strategy=strategy,
                           no_cache=no_cache, dry_run=dry_run, progress=live)
        print_report(report, json_out=json_out)
        finish(report.nodes)
