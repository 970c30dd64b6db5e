"""Durations typed by people (`--since 10m`, `1h30m`, `90s`, `2d`), as whole seconds."""

from __future__ import annotations

import re

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_PART = re.compile(r"(\d+)([smhdw])")


def parse_duration(text: str) -> int:
    """Seconds in `text`; raises ValueError naming what was wrong."""
    s = text.strip().lower()
    if not s:
        raise ValueError("empty duration")
    if s.isdigit():
        raise ValueError(f"{text!r} has no unit (use s, m, h, d or w, e.g. 10m)")
    pos, total = 0, 0
    for m in _PART.finditer(s):
        if m.start() != pos:
            break
        total += int(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if pos != len(s):
        raise ValueError(f"{text!r} is not a duration (examples: 90s, 10m, 1h30m, 2d)")
    if total <= 0:
        raise ValueError(f"{text!r} must be longer than zero")
    return total
