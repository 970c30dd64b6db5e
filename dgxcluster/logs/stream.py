"""Turns one node's compressed, framed stream back into items, as the bytes arrive.

`Inflater` undoes the node-side gzip (or passes raw bytes through when the node had no
gzip); `Demux` splits the result at boundary header lines (see `script.py`) and hands
each piece to an `ItemSink`. Nothing is buffered beyond a partial header line.
"""

from __future__ import annotations

import zlib
from typing import Protocol


class ItemSink(Protocol):
    def begin(self, name: str) -> None:
        """An item's body starts."""

    def body(self, data: bytes) -> None:
        """More of the current item's body."""

    def stderr(self, name: str) -> None:
        """What follows is the item's stderr, not its body."""

    def end(self, name: str, exit_code: int, duration_ms: int) -> None:
        """The item is complete."""

    def meta(self, key: str, value: str) -> None:
        """A fact about the run on the node (its clock, the --since cut-off)."""

    def done(self) -> None:
        """The node sent everything it had."""


class StreamError(Exception):
    """The stream is not what the collection script writes (e.g. truncated or garbled)."""


class Inflater:
    """gzip-decompresses a byte stream chunk by chunk; raw data (no gzip magic) passes through."""

    def __init__(self, out: Demux) -> None:
        self._out = out
        self._z: zlib._Decompress | None = None
        self._sniffed = b""
        self._raw = False
        self.compressed_bytes = 0

    def feed(self, data: bytes) -> None:
        self.compressed_bytes += len(data)
        if self._z is None and not self._raw:
            self._sniffed += data
            if len(self._sniffed) < 2:
                return
            data, self._sniffed = self._sniffed, b""
            if data[:2] == b"\x1f\x8b":
                self._z = zlib.decompressobj(16 + zlib.MAX_WBITS)
            else:
                self._raw = True
        if self._z is not None:
            try:
                self._out.feed(self._z.decompress(data))
            except zlib.error as exc:
                raise StreamError(f"corrupt compressed stream: {exc}") from None
        else:
            self._out.feed(data)

    def close(self) -> None:
        if self._sniffed:
            self._out.feed(self._sniffed)
            self._sniffed = b""
        if self._z is not None:
            self._out.feed(self._z.flush())
        self._out.close()


class Demux:
    """Splits the decompressed stream at `\\n<boundary> ` header lines."""

    def __init__(self, boundary: str, sink: ItemSink) -> None:
        self._marker = b"\n" + boundary.encode() + b" "
        self._sink = sink
        self._buf = b""
        self._in_item = False

    def feed(self, data: bytes) -> None:
        buf = self._buf + data
        marker = self._marker
        while True:
            i = buf.find(marker)
            if i < 0:
                keep = len(marker) - 1
                if len(buf) > keep:
                    self._body(buf[:-keep])
                    buf = buf[-keep:]
                break
            eol = buf.find(b"\n", i + len(marker))
            if eol < 0:
                self._body(buf[:i])
                buf = buf[i:]
                break
            self._body(buf[:i])
            self._header(buf[i + len(marker) : eol].decode("utf-8", "replace"))
            buf = buf[eol + 1 :]
        self._buf = buf

    def close(self) -> None:
        if self._buf:
            self._body(self._buf)
            self._buf = b""

    def _body(self, data: bytes) -> None:
        if data and self._in_item:
            self._sink.body(data)

    def _header(self, line: str) -> None:
        kind, _, rest = line.partition(" ")
        if kind == "file":
            self._in_item = True
            self._sink.begin(rest)
        elif kind == "stderr":
            self._in_item = True
            self._sink.stderr(rest)
        elif kind == "end":
            self._in_item = False
            name, code, ms = _end_fields(rest)
            self._sink.end(name, code, ms)
        elif kind == "meta":
            key, _, value = rest.partition(" ")
            self._sink.meta(key, value)
        elif kind == "done":
            self._in_item = False
            self._sink.done()
        else:
            raise StreamError(f"unknown header {kind!r}")


def _end_fields(rest: str) -> tuple[str, int, int]:
    parts = rest.rsplit(" ", 2)
    if len(parts) != 3:
        raise StreamError(f"bad end header {rest!r}")
    name, code, ms = parts
    try:
        return name, int(code), int(ms)
    except ValueError:
        raise StreamError(f"bad end header {rest!r}") from None
