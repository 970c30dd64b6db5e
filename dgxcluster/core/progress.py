"""How capabilities report live progress without touching the terminal themselves.

Capabilities call a `Progress`; the CLI passes one that draws a rich display, tests pass
`RecordingProgress`, the Python API defaults to `NullProgress`.
"""

from __future__ import annotations

import threading
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
