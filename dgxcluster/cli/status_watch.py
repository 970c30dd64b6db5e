"""`status --watch`: the live view (rich Live), its plain and JSON-lines forms, and Ctrl-C.

On a terminal the view takes the alternate screen and is redrawn whole once per refresh,
only when a new frame exists (no timer redraws between refreshes, so nothing flickers);
on leaving it the last frame is printed to the normal screen. Elsewhere (a pipe, a log
file) each refresh prints the frame as plain text, or with --json one JSON object per line.
"""

from __future__ import annotations

import json
import math
import sys
import time
from typing import TYPE_CHECKING

from dgxcluster.cli.state import interrupt_on_signals

if TYPE_CHECKING:
    from rich.console import Console, RenderableType

    from dgxcluster.core.session import Session
    from dgxcluster.status.report import NodeStatus
    from dgxcluster.status.watch import Frame, Watch

DEFAULT_S = 2.0
MIN_S = 0.5
MAX_S = 3600.0


def check_interval(seconds: float) -> float:
    from dgxcluster.errors import UsageError

    if math.isnan(seconds) or not MIN_S <= seconds <= MAX_S:
        raise UsageError(f"must be between {MIN_S:g} and {MAX_S:g} seconds, got {seconds:g}",
                         "SECONDS")
    return seconds


def _node_row(n: NodeStatus, age: float | None) -> list[str]:
    from dgxcluster.cli.servingtext import gpu_cells, memory_cell
    from dgxcluster.status.report import NO_SMI

    if not n.reachable:
        return [n.node, n.role, f"[bold red]unreachable[/bold red]: {n.error}", "", "", "", "",
                ""]
    ssh = "ok" if age is None else f"[yellow]{age:.0f}s old[/yellow]"
    if n.error:
        return [n.node, n.role, ssh, f"[bold red]{n.error}[/bold red]", "", "", "", ""]
    if n.docker is False:
        containers = f"[bold red]docker down[/bold red]: {n.docker_error}"
    else:
        containers = "\n".join(c.describe() for c in n.containers) or "-"
    util, temp, power = gpu_cells(n.gpus) if n.gpus else (
        "-" if n.gpu_error in (None, NO_SMI) else f"[dim]{n.gpu_error}[/dim]", "", "")
    return [n.node, n.role, ssh, containers, util, temp, power, memory_cell(n.memory)]


def render(frame: Frame, interval: float) -> RenderableType:
    from rich.console import Group
    from rich.table import Table

    from dgxcluster.cli.servingtext import serving_lines

    s = frame.status
    clock = time.strftime("%H:%M:%S", time.localtime(frame.at))
    head = (f"[bold]cluster {s.cluster}[/bold]  {clock}  every {interval:g} s "
            f"(this refresh {frame.took_s:.2f} s)  [dim]Ctrl-C to quit[/dim]")
    t = Table(expand=False)
    for col in ("node", "role", "ssh", "containers", "GPU util", "temp", "power", "memory"):
        t.add_column(col, justify="right" if col in ("GPU util", "temp", "power") else "left")
    for n in s.nodes:
        t.add_row(*_node_row(n, frame.late.get(n.node)))
    lines: list[RenderableType] = [head, t]
    v = s.vllm
    if v.ready:
        lines.append(f"[bold]vllm[/bold]    [green]serving[/green] {', '.join(v.models)} "
                     f"at {v.url}/v1")
    else:
        lines.append(f"[bold]vllm[/bold]    [yellow]{v.state}[/yellow]: {v.error}")
        proc = s.vllm_process
        if proc is not None and proc.state != "absent":
            lines.append(f"        on {s.head}: {proc.describe()}")
    if s.serving is not None:
        lines.extend(f"        {line}" for line in serving_lines(s.serving))
    if s.ranks is not None:  # the native executor: its ranks in place of Ray
        alive = sum(r.alive for r in s.ranks)
        style = "green" if alive == len(s.ranks) else "yellow"
        shown = ", ".join(f"{r.node} rank {r.rank} {r.describe()}" for r in s.ranks)
        lines.append(f"[bold]ranks[/bold]   [{style}]{alive}/{len(s.ranks)} alive[/{style}] "
                     f"(native executor): {shown}")
    else:
        ray_style = "green" if s.ray.state == "up" else "yellow"
        lines.append(f"[bold]ray[/bold]     [{ray_style}]{s.ray.describe()}[/{ray_style}]")
    img_style = "green" if s.image.consistent else "yellow"
    lines.append(f"[bold]image[/bold]   [{img_style}]{s.image.detail}[/{img_style}]")
    return Group(*lines)


def _pace(started: float, interval: float) -> None:
    left = interval - (time.monotonic() - started)
    if left > 0:
        time.sleep(left)


def _json_lines(watch: Watch, interval: float) -> None:
    while True:
        started = time.monotonic()
        sys.stdout.write(json.dumps(watch.refresh().to_json()) + "\n")
        sys.stdout.flush()
        _pace(started, interval)


def _plain(watch: Watch, interval: float, out: Console) -> None:
    while True:
        started = time.monotonic()
        out.print(render(watch.refresh(), interval))
        out.print()
        _pace(started, interval)


def _live(watch: Watch, interval: float, out: Console, nodes: int) -> None:
    from rich.live import Live

    last: Frame | None = None
    try:
        with Live(f"asking {nodes} node(s) and the endpoint ...", console=out, screen=True,
                  auto_refresh=False, redirect_stdout=False, redirect_stderr=False) as live:
            while True:
                started = time.monotonic()
                last = watch.refresh()
                live.update(render(last, interval), refresh=True)
                _pace(started, interval)
    finally:
        if last is not None:
            out.print(render(last, interval))


def run_watch(session: Session, interval: float, json_out: bool) -> None:
    """Refresh until Ctrl-C (or SIGTERM/SIGHUP), which ends it normally."""
    from dgxcluster.cli.reportout import report_console
    from dgxcluster.status.watch import Watch

    interrupt_on_signals()
    watch = Watch(session)
    out = report_console()
    try:
        if json_out:
            _json_lines(watch, interval)
        elif out.is_terminal:
            _live(watch, interval, out, len(session.inventory.nodes))
        else:
            _plain(watch, interval, out)
    except KeyboardInterrupt:
        pass
    finally:
        watch.close()
