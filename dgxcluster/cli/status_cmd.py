"""`dgxcluster status`: what runs where, at a glance (one SSH round per node)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Optional

import typer

from dgxcluster.cli.state import errors_to_exit, finish, state

if TYPE_CHECKING:
    from rich.console import Console

    from dgxcluster.status.report import ClusterStatus


def register(app: typer.Typer) -> None:
    @app.command("status")
    @errors_to_exit
    def status(
        ctx: typer.Context,
        seconds: Annotated[Optional[float], typer.Argument(  # noqa: UP045 - typer on 3.10
            help="With --watch: seconds between refreshes (default 2).", show_default=False,
            metavar="[SECONDS]")] = None,
        watch: Annotated[bool, typer.Option(
            "--watch", "-w", help="Live view, refreshed every SECONDS until Ctrl-C: per node "
            "containers, GPU utilisation/temperature/power and memory; serving load, "
            "throughput and latency.")] = False,
        json_out: Annotated[bool, typer.Option(
            "--json", help="Print the report as JSON (with --watch: one object per line "
            "per refresh).")] = False,
    ) -> None:
        """Per node: reachable, Docker, image tag and ID, dgxcluster containers (role, state,
        uptime), GPU, memory. Cluster-wide: image the same everywhere and as built from the
        inventory's context, Ray nodes and GPUs (native executor: each vLLM rank's node,
        rank, alive or not and last log line), vLLM health, models and endpoint, and rank
        0's serving metrics (requests running and waiting, KV-cache usage, prompt and
        generation tokens/s over about a second, TTFT and inter-token latency p50/p95).

        Exit 0 when every node answered (whatever is or is not running), 3 if a node was
        unreachable (the report still covers the others). `--watch` exits 0 on Ctrl-C.
        """
        import json

        from dgxcluster.errors import UsageError

        if seconds is not None and not watch:
            raise UsageError("a refresh interval needs --watch", "SECONDS")
        if watch:
            from dgxcluster.cli.status_watch import DEFAULT_S, check_interval, run_watch

            interval = check_interval(DEFAULT_S if seconds is None else seconds)
            with state(ctx).session("status") as session:
                run_watch(session, interval, json_out)
            raise typer.Exit(0)

        from dgxcluster.status.gather import gather

        with state(ctx).session("status") as session:
            report = gather(session)
        if json_out:
            typer.echo(json.dumps(report.to_json(), indent=2))
        else:
            _print(report)
        finish(report.outcomes)


def _print(report: ClusterStatus) -> None:
    from rich.table import Table

    from dgxcluster.cli.reportout import report_console
    from dgxcluster.core.naming import PULL_TAG_PREFIX
    from dgxcluster.status.report import NO_SMI

    t = Table(title=f"cluster {report.cluster}", title_justify="left")
    for col in ("node", "role", "ssh", "docker", "image", "containers", "gpu"):
        t.add_column(col)
    for n in report.nodes:
        if not n.reachable:
            t.add_row(n.node, n.role, f"[bold red]unreachable[/bold red]: {n.error}", "", "", "",
                      "")
            continue
        if n.error:
            t.add_row(n.node, n.role, "ok", f"[bold red]{n.error}[/bold red]", "", "", "")
            continue
        docker = "[green]running[/green]" if n.docker else f"[bold red]down[/bold red]: {n.docker_error}"
        image = "-"
        if n.image is not None:
            image = n.image.content_tag or "[yellow]none[/yellow]"
            if n.image.image_id:
                image += f" {n.image.image_id.removeprefix('sha256:')[:12]}"
        containers = "\n".join(c.describe() for c in n.containers) or "-"
        gpu = n.gpu or ("-" if n.gpu_error == NO_SMI else f"[dim]{n.gpu_error or '-'}[/dim]")
        t.add_row(n.node, n.role, "ok", docker, image, containers, gpu)
    out = report_console()
    out.print(t)
    img = report.image
    style = "green" if img.consistent and img.matches_expected is not False else "yellow"
    gives = "image.ref" if (img.expected_tag or "").startswith(PULL_TAG_PREFIX) else "build context"
    expected = f" ({gives} gives {img.expected_tag})" if img.expected_tag else (
        f" (expected tag unknown: {img.expected_error})" if img.expected_error else "")
    out.print(f"[bold]image[/bold]  [{style}]{img.detail}[/{style}]{expected}", highlight=False)
    if report.ranks is not None:
        _print_ranks(report)
    else:
        ray_style = "green" if report.ray.state == "up" else "yellow"
        out.print(f"[bold]ray[/bold]    [{ray_style}]{report.ray.describe()}[/{ray_style}]",
                  highlight=False)
    v = report.vllm
    if v.ready:
        line = f"[green]ready[/green] at {v.url}/v1, serving: {', '.join(v.models)}"
    else:
        line = f"[yellow]{v.state}[/yellow]: {v.error} (endpoint {v.url}/v1)"
    line += v.path_note()
    out.print(f"[bold]vllm[/bold]   {line}", highlight=False, soft_wrap=True)
    _print_keeping(out, report)
    proc = report.vllm_process
    if proc is not None and not v.ready and proc.state != "absent":
        out.print(f"       on {report.head}: {proc.describe()}", highlight=False, soft_wrap=True)
    _print_serving(report)


def _print_serving(report: ClusterStatus) -> None:
    from dgxcluster.cli.reportout import report_console

    out = report_console()
    if report.serving is not None:
        from dgxcluster.cli.servingtext import serving_lines

        for label, line in zip(("serving", "", ""), serving_lines(report.serving), strict=True):
            out.print(f"[bold]{label:<8}[/bold]{line}", highlight=False, soft_wrap=True)
    elif report.serving_error:
        out.print(f"[bold]serving[/bold] [yellow]no metrics[/yellow]: {report.serving_error}",
                  highlight=False, soft_wrap=True)


def _print_keeping(out: Console, report: ClusterStatus) -> None:
    """The watcher's state (serve.restart) and whether the endpoint wants an API key."""
    watchers = ([("", report.healing)] if report.healing is not None else []) + [
        (f" ({node}: Ray worker)", h) for node, h in report.worker_healing.items()]
    for where, h in watchers:
        style = "red" if h.state == "gave up" else "yellow" if h.restarts else "green"
        out.print(f"[bold]healing[/bold]{where} [{style}]{h.describe()}[/{style}]",
                  highlight=False, soft_wrap=True)
    p_style = "green" if "matches" in report.persist else "dim" if report.persist == "off" \
        else "yellow"
    out.print(f"[bold]persist[/bold] [{p_style}]{report.persist}[/{p_style}]"
              + (" (a reboot starts nothing; `start --persist` installs it)"
                 if report.persist == "off" else ""), highlight=False, soft_wrap=True)
    auth_style = "green" if report.auth.startswith("on") else "yellow"
    out.print(f"[bold]auth[/bold]   [{auth_style}]{report.auth}[/{auth_style}]"
              + ("" if report.auth != "off" else " (anyone who reaches the port can use it; "
                 "set serve.api_key)"), highlight=False, soft_wrap=True)


def _print_ranks(report: ClusterStatus) -> None:
    """The native executor's ranks, one row each, in place of Ray's summary."""
    from rich.table import Table
    from rich.text import Text

    from dgxcluster.cli.reportout import report_console

    assert report.ranks is not None
    alive = sum(r.alive for r in report.ranks)
    dp = any(r.replica is not None for r in report.ranks)
    healed = any(r.healing is not None for r in report.ranks)  # native: a watcher per rank
    shown = f", {report.layout}" if report.layout else ""
    t = Table(title=f"vLLM ranks (native executor{shown}): {alive}/{len(report.ranks)} alive",
              title_justify="left")
    for col in ("node", "rank", *(["replica"] if dp else []), "alive",
                *(["healing"] if healed else []), "last log line"):
        t.add_column(col)
    for r in report.ranks:
        style = "green" if r.alive else "bold red"
        h = r.healing
        h_style = "red" if h and h.state == "gave up" else "yellow" if h and h.restarts else "green"
        t.add_row(r.node, str(r.rank), *([r.replica or "-"] if dp else []),
                  Text(r.describe(), style=style),
                  *([Text(h.describe() if h else "-", style=h_style)] if healed else []),
                  Text(r.last_line or "-"))
    report_console().print(t)
