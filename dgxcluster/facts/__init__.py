"""Facts: one module per tool, each an argv plus a pure `parse(text)`.

Parsers read the tool's output FORMAT (tabs, states, tables), tested offline on real
captures in tests/fixtures. Output they cannot read either raises `ParseError` or comes back
as a result with an `error` ("could not parse <command> ..."), so callers report it instead
of crashing or guessing.
"""

from __future__ import annotations

from dgxcluster.errors import DgxClusterError


class ParseError(DgxClusterError):
    """A tool printed something its parser does not recognise."""

    def __init__(self, command: str, reason: str, text: str = "") -> None:
        self.command = command
        self.reason = reason
        first = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
        shown = f" (first line: {first[:120]!r})" if first else " (no output)"
        super().__init__(f"could not parse {command} output: {reason}{shown}")


def content_lines(text: str) -> list[str]:
    """Lines without trailing whitespace or CR; tabs kept (some formats rely on them)."""
    return [ln.rstrip("\r\n ").rstrip() for ln in text.splitlines()]
