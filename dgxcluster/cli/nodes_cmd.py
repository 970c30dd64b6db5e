"""`dgxcluster nodes`: show the inventory's nodes as validated (contacts nothing)."""

from __future__ import annotations

from typing import Annotated

import typer

from dgxcluster.cli.state import errors_to_exit, state


def register(app: typer.Typer) -> None:
    @app.command("nodes")
    @errors_to_exit
    def nodes(
        ctx: typer.Context,
        json_out: Annotated[bool, typer.Option("--json", help="Print the nodes as JSON.")] = False,
    ) -> None:
        """List the inventory's nodes, their SSH address, fabric IP and role. Connects nowhere;
        use it to check an inventory file (exit 2 if it is wrong), the recipe it names and
        its vLLM flags (checked against the image's vLLM release, as `start` does)."""
        import json

        from rich.console import Console
        from rich.table import Table

        from dgxcluster.cli.servesettings import check_flags

        st = state(ctx)
        inv = st.inventory()
        flags = check_flags(st.merged())
        rows = [
            {
                "name": n.name,
                "host": n.host,
                "port": n.port,
                "user": n.user or inv.ssh.user,
                "fabric_ip": str(n.fabric_ip),
                "rail_ips": [str(ip) for ip in n.rails],
                "role": "head" if n.name == inv.head_name else "worker",
            }
            for n in inv.nodes
        ]
        if json_out:
            typer.echo(json.dumps(rows, indent=2))
            return
        table = Table(title=f"cluster {inv.cluster} ({inv.source})", title_justify="left")
        for col in ("node", "role", "ssh", "fabric_ip", "rails"):
            table.add_column(col)
        for r in rows:
            user = f"{r['user']}@" if r["user"] else ""
            table.add_row(str(r["name"]), str(r["role"]), f"{user}{r['host']}:{r['port']}",
                          str(r["fabric_ip"]), ", ".join(r["rail_ips"]))  # type: ignore[arg-type]
        Console().print(table)
        recipe = st.merged().label
        typer.echo(f"serve: {inv.serve.model or '(no model)'}" + (f" ({recipe})" if recipe else "")
                   + f"; {flags.summary()}")
