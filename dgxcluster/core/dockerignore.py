"""`.dockerignore` matching with Docker's semantics (pure).

Patterns are anchored at the context root, cleaned, and may use `*`, `?`, `[...]`, `**`
and `!` exceptions; the last matching pattern wins, and a pattern that matches a parent
directory matches everything below it (as in Docker's PatternMatcher).
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Pattern:
    text: str
    negated: bool
    regex: re.Pattern[str]


def _clean(p: str) -> str:
    p = posixpath.normpath(p.replace("\\", "/"))
    return p.lstrip("/") if p not in ("/", ".") else "."


def _to_regex(pattern: str) -> re.Pattern[str]:
    out = ["^"]
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "*":
            if pattern[i : i + 2] == "**":
                i += 2
                if pattern[i : i + 1] == "/":
                    i += 1
                    out.append("(?:.*/)?")
                else:
                    out.append(".*")
                continue
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            j = pattern.find("]", i + 1)
            if j == -1:
                out.append(re.escape(c))
            else:
                body = pattern[i + 1 : j]
                if body.startswith("^") or body.startswith("!"):
                    body = "^" + body[1:]
                out.append(f"[{body}]")
                i = j
        elif c == "\\" and i + 1 < len(pattern):
            i += 1
            out.append(re.escape(pattern[i]))
        else:
            out.append(re.escape(c))
        i += 1
    out.append("$")
    return re.compile("".join(out))


def parse(text: str) -> list[Pattern]:
    patterns: list[Pattern] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        if negated:
            line = line[1:].strip()
        cleaned = _clean(line)
        if cleaned == ".":
            continue
        patterns.append(Pattern(cleaned, negated, _to_regex(cleaned)))
    return patterns


def excluded(path: str, patterns: list[Pattern]) -> bool:
    """True if the relative path (posix separators) is left out of the build context."""
    parts = path.split("/")
    candidates = ["/".join(parts[: k + 1]) for k in range(len(parts))]
    result = False
    for pat in patterns:
        if any(pat.regex.match(c) for c in candidates):
            result = not pat.negated
    return result
