"""A command's output path: lines in blocks, carriage returns, long lines, the bounded tail,
and the process handle that uses them (fed as the SSH transport feeds it)."""

from __future__ import annotations

from dgxcluster.remote.output import MAX_LINE, Lines, Tail
from dgxcluster.remote.process import HISTORY_BYTES, RemoteProcess
from dgxcluster.secrets import Redactor


def _split(*chunks: bytes, max_line: int = MAX_LINE) -> list[bytes]:
    out: list[bytes] = []
    lines = Lines(out.append, max_line)
    for c in chunks:
        lines.feed(c)
    lines.finish()
    return out


def test_blocks_hold_complete_lines_whatever_the_chunking() -> None:
    data = b"alpha\nbeta\n\ngamma\ndelta"
    for cut in range(len(data) + 1):
        blocks = _split(data[:cut], data[cut:])
        assert b"".join(blocks) == b"alpha\nbeta\n\ngamma\ndelta\n", cut
        assert all(b.endswith(b"\n") for b in blocks)


def test_carriage_returns_end_lines_even_split_from_their_newline() -> None:
    assert b"".join(_split(b"10%\r20%\r\ndone\r", b"\nnext")) == b"10%\n20%\ndone\nnext\n"
    assert b"".join(_split(b"a\r", b"\r", b"b")) == b"a\n\nb\n"
    assert _split(b"last\r") == [b"last\n"]


def test_a_line_without_end_is_handed_on_in_pieces_memory_stays_bounded() -> None:
    out: list[bytes] = []
    lines = Lines(out.append, max_line=1000)
    for _ in range(100):
        lines.feed(b"x" * 333)
        assert len(lines._pending) < 1000
    lines.finish()
    assert [len(b) for b in out] == [1001] * 33 + [301]
    assert b"".join(out).replace(b"\n", b"") == b"x" * 33300


def test_tail_keeps_the_last_bytes_and_counts_the_rest() -> None:
    t = Tail(10)
    for chunk in (b"0123", b"4567", b"89ab", b"cdef"):
        t.add(chunk)
    assert t.value() == b"6789abcdef" and t.dropped == 6
    small = Tail(100)
    small.add(b"abc")
    assert small.value() == b"abc" and small.dropped == 0


def test_process_hands_on_lines_keeps_a_tail_redacts_and_finds_markers() -> None:
    redactor = Redactor()
    redactor.add("s3cr3t-value")
    lines: list[tuple[str, str]] = []
    blocks: list[tuple[str, bytes]] = []
    p = RemoteProcess("n1", "cmd", lambda s, ln: lines.append((s, ln)),
                      on_lines=lambda s, b: blocks.append((s, b)), keep=16, redactor=redactor)
    p._output("stdout", b"READY s3cr3t-value\nmore")
    p._output("stderr", b"warn\n")
    p._output("stdout", b" text\n")
    p._output_end()
    assert p.wait_line(lambda ln: ln.startswith("READY"), 1) == "READY ******"
    assert lines == [("stdout", "READY ******"), ("stderr", "warn"), ("stdout", "more text")]
    assert blocks == [("stdout", b"READY ******\n"), ("stderr", b"warn\n"),
                      ("stdout", b"more text\n")]
    p._finish(p._result(0, 0.1))
    r = p.result()
    assert r.stdout == "*****\nmore text\n"  # the last 16 bytes of what was redacted
    assert r.truncated and r.dropped == {"stdout": len("READY *")}
    assert r.stderr == "warn\n"


def test_marker_search_looks_only_through_recent_output() -> None:
    p = RemoteProcess("n1", "cmd")
    p._output("stdout", b"EARLY\n")
    filler = b"y" * 1023 + b"\n"
    for _ in range(HISTORY_BYTES // len(filler) + 2):
        p._output("stdout", filler)
    p._output("stdout", b"LATE\n")
    p._output_end()
    p._finish(p._result(0, 0.0))
    assert p.wait_line(lambda ln: ln == "LATE", 1) == "LATE"
    assert p.wait_line(lambda ln: ln == "EARLY", 1) is None


def test_raw_chunks_go_to_the_chunk_callback_and_are_not_kept() -> None:
    got: list[bytes] = []
    p = RemoteProcess("n1", "cmd", on_chunk=got.append)
    p._output("stdout", b"\x00\x01binary")
    p._output_end()
    p._finish(p._result(0, 0.0))
    assert got == [b"\x00\x01binary"] and p.result().stdout == ""


def test_a_secret_where_a_long_line_is_cut_is_masked_not_split() -> None:
    secret = "hf_" + "k" * 30
    redactor = Redactor()
    redactor.add(secret)
    blocks: list[bytes] = []
    p = RemoteProcess("n1", "cmd", on_lines=lambda s, b: blocks.append(b), redactor=redactor)
    line = b"x" * (1 << 20) + secret.encode() + b"y" * 100  # 1 MiB lines are cut in pieces
    for i in range(0, len(line), 7):  # the secret arrives in bits, across the cut
        p._output("stdout", line[i : i + 7])
    p._output_end()
    text = b"".join(blocks).replace(b"\n", b"")
    assert secret.encode() not in text and b"hf_kk" not in text and b"******" in text
