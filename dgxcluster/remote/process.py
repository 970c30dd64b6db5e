"""A remote command that keeps running while the operator does other things.

`Connection.start` returns a `RemoteProcess`: the command's output reaches the callbacks
as it comes, its stdin can stay open after a first payload (a remote side that watches its
stdin ends when the operator goes away, which is how the cluster lock, `logs --follow` and
the relay agents clean up after themselves), and the caller waits for a marker line, for
the end, or gives up. `Connection.run` is `start(...).result()`.

The transports (`ssh.py`, the test fake) subclass this and feed it; the waiting, the
marker lines and the outcome are kept here once.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from dgxcluster.remote.result import Result

#: Called with ("stdout" | "stderr", line) for each complete output line, live.
LineCallback = Callable[[str, str], None]
#: Called with each raw chunk of stdout when the caller wants bytes, not text.
ChunkCallback = Callable[[bytes], None]
#: `Result.exit_code` of a command this process gave up on with `kill()`.
KILLED = -9


class RemoteProcess:
    """One command started on one node; its outcome once it ends.

    `wait(timeout)` -> True once it ended; `result()` blocks until then and returns the
    Result (never raising for a non-zero exit) or raises what ended it (ConnectError when
    the node went away, CommandTimeout past the start timeout). `wait_line(match, timeout)`
    waits for a stdout line (a marker such as "LOCKED" or "LISTEN <port>"). `release()`
    ends stdin (EOF) after the first payload; `kill()` stops waiting and closes the channel:
    the remote side sees EOF on stdin and a closed stdout, and `result()` then gives exit
    code KILLED.
    """

    def __init__(self, node: str, argv: str, on_line: LineCallback | None = None) -> None:
        self.node = node
        self.argv = argv  # for display: quoted, secrets masked
        self._on_line = on_line
        self._cond = threading.Condition()
        self._lines: list[str] = []
        self._outcome: Result | BaseException | None = None
        self._done = threading.Event()
        self._released = threading.Event()
        self._killed = False

    # -- fed by the transport ------------------------------------------------------------

    def _line(self, stream: str, text: str) -> None:
        if stream == "stdout":
            with self._cond:
                self._lines.append(text)
                self._cond.notify_all()
        if self._on_line is not None:
            self._on_line(stream, text)

    def _finish(self, outcome: Result | BaseException) -> None:
        with self._cond:
            if self._done.is_set():
                return
            self._outcome = outcome
            self._done.set()
            self._released.set()  # nothing more goes to a process that ended
            self._cond.notify_all()

    def _close_channel(self) -> None:
        """The transport's part of `kill()`."""

    # -- for the caller ------------------------------------------------------------------

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the command ended (at most `timeout` seconds); True if it did."""
        return self._done.wait(timeout)

    def result(self) -> Result:
        """The command's Result once it ended; raises what ended it otherwise."""
        self._done.wait()
        outcome = self._outcome
        if isinstance(outcome, BaseException):
            raise outcome
        assert outcome is not None
        return outcome

    def wait_line(self, match: Callable[[str], bool], timeout: float) -> str | None:
        """The first stdout line (since the start) for which `match` is true; None if the
        command ended without one. Raises TimeoutError after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        seen = 0
        with self._cond:
            while True:
                for line in self._lines[seen:]:
                    if match(line):
                        return line
                seen = len(self._lines)
                if self._done.is_set():
                    return None
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"{self.node}: no such line from `{self.argv}` "
                                       f"within {timeout:g}s")
                self._cond.wait(remaining)

    def release(self) -> None:
        """End the command's stdin (EOF) once its first payload went out (idempotent)."""
        self._released.set()

    def kill(self) -> None:
        """Stop waiting for the command and close its channel (idempotent)."""
        if self._done.is_set():
            return
        self._killed = True
        self._released.set()
        self._close_channel()
