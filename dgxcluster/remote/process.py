"""A remote command that keeps running while the operator does other things.

`Connection.start` returns a `RemoteProcess`: the command's output reaches the callbacks
as it comes, its stdin can stay open after a first payload (a remote side that watches its
stdin ends when the operator goes away, which is how the cluster lock, `logs --follow` and
the relay agents clean up after themselves), and the caller waits for a marker line, for
the end, or gives up. `Connection.run` is `start(...).result()`.

The transports (`ssh.py`, the test fake) subclass this and feed it raw output
(`_output`); the line splitting and the bounded tail (`output.py`), the waiting, the marker
lines and the outcome are kept here once.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

from dgxcluster.remote import scope
from dgxcluster.remote.output import DEFAULT_KEEP, Lines, Tail
from dgxcluster.remote.result import Result
from dgxcluster.secrets import Redactor

#: Called with ("stdout" | "stderr", line) for each complete output line, live.
LineCallback = Callable[[str, str], None]
#: Called with ("stdout" | "stderr", bytes) for each block of complete lines (each ending in
#: b"\n", empty lines kept, secrets masked), live: one call per chunk that arrived, for
#: output too big to handle one line at a time (`exec`).
LinesCallback = Callable[[str, bytes], None]
#: Called with each raw chunk of stdout when the caller wants bytes, not text.
ChunkCallback = Callable[[bytes], None]
#: How much of the latest stdout `wait_line` looks through (marker lines come early and few).
HISTORY_BYTES = 1 << 20
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

    def __init__(self, node: str, argv: str, on_line: LineCallback | None = None, *,
                 on_lines: LinesCallback | None = None, on_chunk: ChunkCallback | None = None,
                 keep: int = DEFAULT_KEEP, redactor: Redactor | None = None) -> None:
        self.node = node
        self.argv = argv  # for display: quoted, secrets masked
        self._on_line = on_line
        self._on_lines = on_lines
        self._on_chunk = on_chunk
        self._redactor = redactor or Redactor()
        hold = max((len(v.encode()) for v in self._redactor.values), default=0)
        self._tails = {"stdout": Tail(0 if on_chunk else keep, hold), "stderr": Tail(keep, hold)}
        self._splitters = {s: Lines(lambda block, s=s: self._block(s, block),  # type: ignore[misc]
                                    redact=self._redactor.redact_bytes, hold=hold)
                           for s in ("stdout", "stderr")}
        self._cond = threading.Condition()
        self._history: deque[tuple[int, bytes]] = deque()  # (sequence number, block) of stdout
        self._history_bytes = 0
        self._seq = 0
        self._outcome: Result | BaseException | None = None
        self._done = threading.Event()
        self._released = threading.Event()
        self._killed = False
        self._scope: scope.Scope | None = None
        self._scope_token = 0

    def _join_scope(self) -> None:
        """The transport's channel is running: a cancelled fan-out (`scope.py`) kills it."""
        self._scope = scope.current()
        if self._scope is not None:
            self._scope_token = self._scope.add(self.kill)

    # -- fed by the transport ------------------------------------------------------------

    def _output(self, stream: str, data: bytes) -> None:
        """Raw bytes of one stream, as they arrived (may raise what a callback raised)."""
        if stream == "stdout" and self._on_chunk is not None:
            self._on_chunk(data)
            return
        self._tails[stream].add(data)
        self._splitters[stream].feed(data)

    def _output_end(self) -> None:
        """Both streams ended: unterminated last lines are handed on."""
        for splitter in self._splitters.values():
            splitter.finish()

    def _block(self, stream: str, raw: bytes) -> None:
        block = self._redactor.redact_bytes(raw)
        if stream == "stdout":
            with self._cond:
                self._history.append((self._seq, block))
                self._seq += 1
                self._history_bytes += len(block)
                while len(self._history) > 1 and self._history_bytes > HISTORY_BYTES:
                    self._history_bytes -= len(self._history.popleft()[1])
                self._cond.notify_all()
        if self._on_lines is not None:
            self._on_lines(stream, block)
        if self._on_line is not None:
            for line in block.split(b"\n"):
                if line:
                    self._on_line(stream, line.decode("utf-8", "replace"))

    def _result(self, exit_code: int, duration_s: float) -> Result:
        """The Result of a command that ended: the kept tail of each stream, redacted."""
        out, err = self._tails["stdout"], self._tails["stderr"]
        redact = self._redactor.redact_bytes
        stdout, stderr = out.value(redact), err.value(redact)
        return Result(node=self.node, argv=self.argv, exit_code=exit_code,
                      stdout=stdout.decode("utf-8", "replace"),
                      stderr=stderr.decode("utf-8", "replace"),
                      duration_s=duration_s,
                      dropped={k: t.dropped for k, t in self._tails.items() if t.dropped})

    def _finish(self, outcome: Result | BaseException) -> None:
        with self._cond:
            if self._done.is_set():
                return
            self._outcome = outcome
            self._done.set()
            self._released.set()  # nothing more goes to a process that ended
            self._cond.notify_all()
        if self._scope is not None:
            self._scope.remove(self._scope_token)

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
        """The first stdout line (since the start, within the last HISTORY_BYTES) for which
        `match` is true; None if the command ended without one. Raises TimeoutError after
        `timeout` seconds."""
        deadline = time.monotonic() + timeout
        seen = 0
        with self._cond:
            while True:
                for seq, block in self._history:
                    if seq < seen:
                        continue
                    for raw in block.split(b"\n"):
                        line = raw.decode("utf-8", "replace")
                        if line and match(line):
                            return line
                seen = self._seq
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
