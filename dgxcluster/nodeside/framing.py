"""How dgxcluster's node-side programs frame a byte stream (Python standard library only).

Two programs stream data between nodes: `relay` (a command's stdout, node to node over TCP)
and `hfcache` (one cache entry's files, through a pipe). Both use the same frame: a 4-byte
big-endian length, then that many bytes. relay sends data frames and ends with an empty
frame followed by the sha256 of everything sent; hfcache sends a JSON record per file, each
followed by the file's raw bytes. Reads go through a `read_into(view) -> n` function, so
sockets (`recv_into`), pipes (`os.readv`) and files (`readinto`) read the same way.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from typing import Any

HDR = struct.Struct("!I")
#: The largest data frame a sender writes (and a receiver accepts).
CHUNK = 1 << 20
#: The largest JSON record accepted.
MAX_RECORD = 1 << 20

ReadInto = Callable[[memoryview], int]


class Truncated(EOFError):
    """The stream ended inside a frame."""


def fill(read_into: ReadInto, view: memoryview) -> None:
    """Fill `view` completely, or raise Truncated."""
    got = 0
    while got < len(view):
        k = read_into(view[got:])
        if not k:
            raise Truncated(f"stream ended after {got} of {len(view)} bytes")
        got += k


def read_exact(read_into: ReadInto, n: int, buf: bytearray | None = None) -> memoryview:
    """Exactly n bytes (into `buf` when it is large enough: no copy per frame)."""
    if buf is None or len(buf) < n:
        buf = bytearray(n)
    view = memoryview(buf)[:n]
    fill(read_into, view)
    return view


def frame(data: bytes | memoryview) -> bytes:
    """One data frame: length, then the bytes."""
    return HDR.pack(len(data)) + bytes(data)


def end_frame(trailer: bytes) -> bytes:
    """The empty frame that ends a stream, then a trailer (relay: the payload's sha256)."""
    return HDR.pack(0) + trailer


def read_length(read_into: ReadInto) -> int:
    (n,) = HDR.unpack(read_exact(read_into, HDR.size))
    return int(n)


def record(meta: dict[str, Any]) -> bytes:
    """A JSON object as one frame."""
    return frame(json.dumps(meta, sort_keys=True).encode())


def read_record(read_into: ReadInto, limit: int = MAX_RECORD) -> dict[str, Any]:
    """The next frame as a JSON object; ValueError if it is too large or not an object."""
    n = read_length(read_into)
    if n > limit:
        raise ValueError(f"record of {n} bytes exceeds {limit}")
    meta = json.loads(bytes(read_exact(read_into, n)))
    if not isinstance(meta, dict):
        raise ValueError("record is not a JSON object")
    return meta
