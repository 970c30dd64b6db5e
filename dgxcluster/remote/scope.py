"""Interrupting a fan-out without closing its connections.

`Cluster.map` runs each node's call in a worker thread inside a `Scope`. Every remote
process a call starts, and every SFTP transfer it makes, registers a way to stop it there.
When the fan-out is interrupted (Ctrl-C, SIGTERM), the scope is cancelled: those channels
are closed, which unblocks the calls, and anything they try to start afterwards fails at once
(`Cancelled`). The SSH connections themselves stay open for what runs next, so one
connection per node serves the whole invocation, the rollback after a Ctrl-C included, and
a command started outside any scope (`detached()`: the cluster lock) keeps running: the
lock stays held while the rollback runs.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator

from dgxcluster.errors import Cancelled

_local = threading.local()


class Scope:
    """The channels one fan-out's calls opened; `cancel()` closes them all."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._stops: dict[int, Callable[[], None]] = {}
        self._next = 0
        self.cancelled = False

    def add(self, stop: Callable[[], None]) -> int:
        """Register a way to stop a channel; stopped at once if already cancelled."""
        with self._lock:
            token = self._next
            self._next += 1
            if not self.cancelled:
                self._stops[token] = stop
                return token
        stop()
        return token

    def remove(self, token: int) -> None:
        with self._lock:
            self._stops.pop(token, None)

    def cancel(self) -> None:
        with self._lock:
            self.cancelled = True
            stops, self._stops = list(self._stops.values()), {}
        for stop in stops:
            with contextlib.suppress(Exception):  # stopping is best effort
                stop()


def current() -> Scope | None:
    """The scope of the fan-out this thread works for (None outside one, or detached)."""
    return getattr(_local, "scope", None)


@contextlib.contextmanager
def entered(scope: Scope | None) -> Iterator[None]:
    """Run the body as part of `scope` (a worker thread of `Cluster.map`)."""
    before = current()
    _local.scope = scope
    try:
        yield
    finally:
        _local.scope = before


def detached() -> contextlib.AbstractContextManager[None]:
    """Start what must outlive an interrupted fan-out (the cluster lock's channel)."""
    return entered(None)


def check(node: str) -> None:
    """Refuse to start anything for a fan-out that was interrupted."""
    scope = current()
    if scope is not None and scope.cancelled:
        raise Cancelled(node)


@contextlib.contextmanager
def registered(stop: Callable[[], None]) -> Iterator[None]:
    """Make `stop` part of the current scope for the body's length (an SFTP transfer)."""
    scope = current()
    token = scope.add(stop) if scope is not None else None
    try:
        yield
    finally:
        if scope is not None and token is not None:
            scope.remove(token)
