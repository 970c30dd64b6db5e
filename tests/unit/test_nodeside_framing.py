"""The one stream framing both node-side streamers use (relay over TCP, hfcache over a pipe)."""

from __future__ import annotations

import io
import os
import socket
import struct

import pytest

from dgxcluster.nodeside import framing


def test_frames_are_a_big_endian_length_then_the_bytes() -> None:
    assert framing.frame(b"abc") == struct.pack("!I", 3) + b"abc"
    assert framing.end_frame(b"\x01" * 32) == b"\0\0\0\0" + b"\x01" * 32
    assert framing.record({"b": 1, "a": "x"}) == framing.frame(b'{"a": "x", "b": 1}')


def test_read_back_from_a_socket_a_pipe_and_a_file() -> None:
    data = framing.frame(b"payload") + framing.record({"kind": "end"}) + framing.end_frame(b"T")
    a, b = socket.socketpair()
    a.sendall(data)
    a.close()
    r, w = os.pipe()
    os.write(w, data)
    os.close(w)
    readers = [b.recv_into, lambda v: os.readv(r, [v]), io.BytesIO(data).readinto]
    for read_into in readers:
        n = framing.read_length(read_into)
        assert bytes(framing.read_exact(read_into, n)) == b"payload"
        assert framing.read_record(read_into) == {"kind": "end"}
        assert framing.read_length(read_into) == 0
        assert bytes(framing.read_exact(read_into, 1)) == b"T"
    b.close()
    os.close(r)


def test_a_stream_cut_inside_a_frame_is_truncated() -> None:
    cut = io.BytesIO(framing.frame(b"0123456789")[:8])
    n = framing.read_length(cut.readinto)
    with pytest.raises(framing.Truncated, match="after 4 of 10 bytes"):
        framing.read_exact(cut.readinto, n)
    assert issubclass(framing.Truncated, EOFError)


def test_read_exact_reuses_a_large_enough_buffer() -> None:
    buf = bytearray(16)
    view = framing.read_exact(io.BytesIO(b"abcd").readinto, 4, buf)
    assert view.obj is buf and bytes(view) == b"abcd"


@pytest.mark.parametrize(("raw", "why"), [
    (struct.pack("!I", framing.MAX_RECORD + 1), "exceeds"),
    (framing.frame(b"[1, 2]"), "not a JSON object"),
    (framing.frame(b"{not json"), "Expecting property name"),
])
def test_bad_records_are_refused(raw: bytes, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        framing.read_record(io.BytesIO(raw).readinto)
