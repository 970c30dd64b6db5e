"""Terminal output helpers for commands: per-node live display and result tables."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from rich.console import Console
    from rich.live import Live
    from rich.table import Table

    from dgxcluster.core.steps import Outcome

STATUS_STYLE = {
    "changed": "yellow",
    "unchanged": "green",
    "failed": "bold red",
    "unreachable": "bold red",
    "skipped": "dim",
    "PASS": "green",
    "WARN": "yellow",
    "FAIL": "bold red",
}


class MaskedStream:
    """stdout/stderr with anything shaped like a Hugging Face token masked on the way out:
    the one choke point for every line the CLI prints (tables, live lines, errors, JSON,
    log lines), whatever produced it."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        from dgxcluster.secrets import mask_token_shapes

        self._stream.write(mask_token_shapes(text))
        return len(text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def mask_output() -> None:
    """Wrap sys.stdout and sys.stderr in `MaskedStream` (once)."""
    if not isinstance(sys.stdout, MaskedStream):
        sys.stdout = MaskedStream(sys.stdout)
    if not isinstance(sys.stderr, MaskedStream):
        sys.stderr = MaskedStream(sys.stderr)


def console(stderr: bool = False) -> Console:
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, soft_wrap=False)


class LiveNodes:
    """A `Progress` that shows one status line per node (rich Live) and prefixed log lines.

    On a non-terminal (CI, pipes) it prints plain `node: text` lines instead.
    """

    def __init__(self, nodes: Sequence[str], title: str, show_lines: bool = True) -> None:
        self.nodes = list(nodes)
        self.title = title
        self.show_lines = show_lines
        self._status = dict.fromkeys(self.nodes, "waiting")
        self._lock = threading.Lock()
        self._start = time.monotonic()
        self._console = console(stderr=True)
        self._live: Live | None = None

    def __enter__(self) -> LiveNodes:
        if self._console.is_terminal:
            from rich.live import Live

            self._live = Live(self._render(), console=self._console, refresh_per_second=8,
                              transient=True)
            self._live.__enter__()
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._live is not None:
            self._live.__exit__(et, ev, tb)
            self._live = None

    def _render(self) -> Table:
        from rich.table import Table

        t = Table.grid(padding=(0, 2))
        elapsed = time.monotonic() - self._start
        t.add_row(f"[bold]{self.title}[/bold]", f"{elapsed:5.0f}s")
        for n in self.nodes:
            t.add_row(n, self._status.get(n, ""))
        return t

    def status(self, node: str, message: str) -> None:
        with self._lock:
            self._status[node] = message
            if self._live is not None:
                self._live.update(self._render())
            else:
                sys.stderr.write(f"{node}: {message}\n")
                sys.stderr.flush()

    def line(self, node: str, text: str) -> None:
        if not self.show_lines:
            return
        with self._lock:
            if self._live is not None:
                self._live.console.print(f"[dim]{node}:[/dim] {text}", markup=True,
                                         highlight=False)
            else:
                sys.stderr.write(f"{node}: {text}\n")
                sys.stderr.flush()

    def message(self, text: str) -> None:
        with self._lock:
            if self._live is not None:
                self._live.console.print(text, highlight=False)
            else:
                sys.stderr.write(text + "\n")
                sys.stderr.flush()


def outcome_table(title: str, outcomes: Iterable[Outcome]) -> None:
    from rich.table import Table

    t = Table(title=title, title_justify="left")
    for col in ("node", "step", "status", "detail"):
        t.add_column(col)
    for o in outcomes:
        style = STATUS_STYLE.get(o.status.value, "")
        t.add_row(o.node, o.step, f"[{style}]{o.status.value}[/{style}]", o.detail)
    console().print(t)
