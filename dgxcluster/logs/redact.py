"""Redaction for everything `logs` collects: by value, by variable name, and by token shape.

The session's redactor only knows the secrets present where `logs` runs. A container
started with `--env-file` still shows the values in `docker inspect` (`Config.Env`), and a
program may print its own token, even when the operator collecting logs has no HF_TOKEN.
So collected bytes are also masked wherever a variable *named* like a secret is assigned
(`HF_TOKEN=...`, `"HF_TOKEN": "..."`, `HF_TOKEN: ...`), and wherever a Hugging Face token
shape (`hf_` + 20 or more letters and digits) appears.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

from dgxcluster.secrets import DEFAULT_SECRET_NAMES, MASK, Redactor

#: Words that make an upper-case variable name a secret (MY_API_KEY, WANDB_TOKEN, ...).
SECRET_WORDS = ("TOKEN", "SECRET", "PASSWORD", "API_KEY")
HF_TOKEN_SHAPE = rb"hf_[A-Za-z0-9]{20,}"
#: A line longer than this without a newline is redacted in pieces (binary data).
MAX_LINE = 1 << 20

_MASK = MASK.encode()


def _name_pattern(names: Iterable[str]) -> bytes:
    explicit = sorted({n for n in names if n}, key=len, reverse=True)
    words = "|".join(SECRET_WORDS)
    generic = rf"[A-Z0-9_]*(?:{words})[A-Z0-9_]*"
    alts = [f"(?i:{re.escape(n)})" for n in explicit] + [generic]
    name = "(?:" + "|".join(alts) + ")"
    # NAME, then `=` or `:` (optionally around quotes, JSON-escaped or not), then the value
    sep = r"""(?:\\?["']?\s*[:=]\s*\\?["']?)"""
    value = r"""[^\s"'\\,;}\]]+"""
    return rf"(?<![A-Za-z0-9_])(?P<name>{name})(?P<sep>{sep})(?P<value>{value})".encode()


def _masked(m: re.Match[bytes]) -> bytes:
    if m.group("shape") is not None:
        return _MASK
    return m.group("name") + m.group("sep") + _MASK


class CollectedRedactor:
    """Masks secrets in collected bytes: known values, secret-named assignments, token shapes."""

    def __init__(self, names: Iterable[str] = (), values: Redactor | None = None) -> None:
        self.values = values or Redactor()
        all_names = [n for n in (*names, *DEFAULT_SECRET_NAMES) if n]
        # one pass over a line: a secret-named assignment, or else a token shape
        self._pattern = re.compile(_name_pattern(all_names) + b"|(?P<shape>" + HF_TOKEN_SHAPE
                                   + b")")
        # only lines holding one of these can match: everything else is skipped at C speed
        words = {w.encode() for w in SECRET_WORDS} | {b"hf_"}
        for n in all_names:
            words |= {n.encode(), n.lower().encode(), n.upper().encode()}
        self._triggers = sorted(words)

    def redact(self, data: bytes) -> bytes:
        data = self.values.redact_bytes(data)
        spans = self._candidate_lines(data)
        if not spans:
            return data
        out: list[bytes] = []
        pos = 0
        for start, end in spans:
            out.append(data[pos:start])
            out.append(self._pattern.sub(_masked, data[start:end]))
            pos = end
        out.append(data[pos:])
        return b"".join(out)

    def _candidate_lines(self, data: bytes) -> list[tuple[int, int]]:
        """(start, end) of every line holding a trigger word, sorted and merged."""
        spans: list[tuple[int, int]] = []
        for word in self._triggers:
            i = data.find(word)
            while i >= 0:
                start = data.rfind(b"\n", 0, i) + 1
                end = data.find(b"\n", i)
                end = len(data) if end < 0 else end
                spans.append((start, end))
                i = data.find(word, end)
        if not spans:
            return []
        spans.sort()
        merged = [spans[0]]
        for start, end in spans[1:]:
            last_start, last_end = merged[-1]
            if start <= last_end:
                merged[-1] = (last_start, max(last_end, end))
            else:
                merged.append((start, end))
        return merged

    def text(self, text: str) -> str:
        return self.redact(text.encode("utf-8", "surrogateescape")).decode(
            "utf-8", "surrogateescape"
        )

    def writer(self, write: Callable[[bytes], object]) -> LineRedactingWriter:
        return LineRedactingWriter(self, write)


class LineRedactingWriter:
    """Redacts a byte stream line by line, so a secret split across chunks is still caught."""

    def __init__(self, redactor: CollectedRedactor, write: Callable[[bytes], object]) -> None:
        self._r = redactor
        self._write = write
        self._pending = b""
        self.bytes_in = 0

    def feed(self, data: bytes) -> None:
        self.bytes_in += len(data)
        buf = self._pending + data
        cut = buf.rfind(b"\n")
        if cut < 0:
            if len(buf) > MAX_LINE:
                self._write(self._r.redact(buf))
                buf = b""
            self._pending = buf
            return
        self._write(self._r.redact(buf[: cut + 1]))
        self._pending = buf[cut + 1 :]

    def close(self) -> None:
        if self._pending:
            self._write(self._r.redact(self._pending))
            self._pending = b""
