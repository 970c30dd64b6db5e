"""A command's output as it arrives, in time linear in its size and bounded memory.

Each chunk read from a channel is looked at once, with bytes methods (C loops): complete
lines are handed on in blocks (one call per chunk, not per line, so 300 MB of short lines
is not millions of Python calls), and only the last `keep` bytes of each stream are kept for
the `Result` (how much was dropped before them is counted, so the caller can say the output
was truncated). A line longer than `MAX_LINE` without a newline is handed on in `MAX_LINE`
pieces, so no single line can make memory grow either. Carriage returns end lines, as a
progress bar's updates are lines to whoever reads them.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

#: A line longer than this without a newline is handed on in pieces of this size.
MAX_LINE = 1 << 20
#: What a `Result` keeps of each stream unless the caller asks for another bound.
DEFAULT_KEEP = 64 << 20


class Tail:
    """The last `limit` bytes of a stream; `dropped` counts the bytes before them.

    Kept raw, exactly as the command printed them, plus `hold` bytes more: `value` redacts
    before it cuts, so a secret (at most `hold` bytes) that the cut would split is masked
    whole rather than shown in part.
    """

    def __init__(self, limit: int, hold: int = 0) -> None:
        self.limit = max(0, limit)
        self._keep = self.limit + hold if self.limit else 0
        self._parts: deque[bytes] = deque()
        self._size = 0
        self._total = 0
        self.dropped = 0

    def add(self, data: bytes) -> None:
        if not data:
            return
        self._total += len(data)
        self._parts.append(data)
        self._size += len(data)
        while self._parts and self._size - len(self._parts[0]) >= self._keep:
            self._size -= len(self._parts.popleft())

    def value(self, redact: Callable[[bytes], bytes] | None = None) -> bytes:
        """The kept bytes, redacted, at most `limit`; `dropped` then counts what came before
        them (bytes of the stream, plus what redaction cut)."""
        data = b"".join(self._parts)
        data = data[len(data) - self._keep:] if len(data) > self._keep else data
        before = self._total - len(data)
        if redact is not None:
            data = redact(data)
        if len(data) > self.limit:
            before += len(data) - self.limit
            data = data[len(data) - self.limit:] if self.limit else b""
        self.dropped = before
        return data


class Lines:
    """Splits a byte stream into blocks of complete lines, each ending in `\\n`.

    A long line is cut into pieces only once `hold` more bytes have arrived, after `redact`
    ran over all of it: a secret (at most `hold` bytes) that a cut would split is masked
    before the cut, never shown in halves. An unfinished line is kept as the chunks it came
    in (views, never copied until a piece or the line's end is handed on), so a 300 MB line
    costs one copy of itself, two when there are secrets to mask.
    """

    def __init__(self, emit: Callable[[bytes], None], max_line: int = MAX_LINE,
                 redact: Callable[[bytes], bytes] | None = None, hold: int = 0) -> None:
        self._emit = emit
        self._max = max_line
        self._redact = redact
        self._hold = hold
        self._pending: deque[bytes | memoryview] = deque()
        self._size = 0  # bytes in _pending
        self._cr = False  # the last chunk ended in \r: a \n may follow in the next one

    def feed(self, data: bytes) -> None:
        if self._cr:
            data = b"\r" + data
            self._cr = False
        if data.endswith(b"\r"):
            data = data[:-1]
            self._cr = True
        if b"\r" in data:
            data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        end = data.rfind(b"\n")
        if end < 0:
            self._hold_back(data)
            return
        start = 0
        if self._pending:  # the line the last chunk began ends here: on its own, not copied
            start = data.find(b"\n") + 1  # along with the rest of this chunk
            self._emit(b"".join([*self._pending, data[:start]]))
            self._pending.clear()
            self._size = 0
        if start <= end:
            self._emit(data[start : end + 1] if start or end + 1 < len(data) else data)
        self._hold_back(data[end + 1 :])

    def _hold_back(self, data: bytes) -> None:
        """Keep an unfinished line's bytes; cut it once it is long enough."""
        if not data:
            return
        self._pending.append(data)
        self._size += len(data)
        if self._size < self._max + self._hold:
            return
        if self._hold and self._redact is not None:  # secrets: mask all of it before a cut
            whole = self._redact(b"".join(self._pending))
            self._pending = deque([whole])
            self._size = len(whole)
        while self._size >= self._max + self._hold:
            self._emit(b"".join([*self._take(self._max), b"\n"]))

    def _take(self, n: int) -> list[bytes | memoryview]:
        """The first `n` pending bytes, as views of the chunks they are in."""
        parts: list[bytes | memoryview] = []
        self._size -= n
        while n > 0:
            head = self._pending[0]
            if len(head) <= n:
                parts.append(self._pending.popleft())
                n -= len(head)
            else:
                view = memoryview(head)
                parts.append(view[:n])
                self._pending[0] = view[n:]
                n = 0
        return parts

    def finish(self) -> None:
        """The stream ended: an unterminated last line is handed on too."""
        if self._cr or self._pending:
            self._cr = False
            self._emit(b"".join([*self._pending, b"\n"]))
            self._pending.clear()
            self._size = 0
