"""How capabilities report live progress without touching the terminal themselves.

Capabilities call a `Progress`; the CLI passes one that draws a rich display, tests pass
`RecordingProgress`, the Python API defaults to `NullProgress`.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Protocol


class Progress(Protocol):
    def status(self, node: str, message: str) -> None:
        """The node's current state in a few words (replaces the previous one)."""

    def line(self, node: str, text: str) -> None:
        """One line of live output from the node (e.g. a build log line)."""

    def message(self, text: str) -> None:
        """A cluster-wide note."""


class NullProgress:
    def status(self, node: str, message: str) -> None:
        pass

    def line(self, node: str, text: str) -> None:
        pass

    def message(self, text: str) -> None:
        pass


@dataclass
class RecordingProgress:
    """Keeps everything reported, for tests."""

    statuses: list[tuple[str, str]] = field(default_factory=list)
    lines: list[tuple[str, str]] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def status(self, node: str, message: str) -> None:
        with self._lock:
            self.statuses.append((node, message))

    def line(self, node: str, text: str) -> None:
        with self._lock:
            self.lines.append((node, text))

    def message(self, text: str) -> None:
        with self._lock:
            self.messages.append(text)


class StatusThrottle:
    """Reports a node's status when its gist changes, or every `every_s` seconds otherwise:
    a live display stays current while plain (CI) output is not flooded by poll loops."""

    def __init__(self, progress: Progress, every_s: float = 5.0) -> None:
        self.progress = progress
        self.every_s = every_s
        self._last: dict[str, tuple[str, float]] = {}

    def status(self, node: str, gist: str, message: str | None = None) -> None:
        now = time.monotonic()
        prev = self._last.get(node)
        if prev is None or prev[0] != gist or now - prev[1] >= self.every_s:
            self._last[node] = (gist, now)
            self.progress.status(node, message or gist)
