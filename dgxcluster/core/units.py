"""Sizes and rates as people read them: the one byte formatter every message uses.

Decimal units (kB = 1000 B, as `docker images` and network rates count), with the unit
chosen so the number stays between 1 and 1000: a 300 kB file is "300.0 kB", never
"0.00 GB", and a 35 GB image is "35.00 GB".
"""

from __future__ import annotations

_UNITS = ("B", "kB", "MB", "GB", "TB", "PB")


def human_bytes(n: float) -> str:
    """`512 B`, `1.5 kB`, `20.3 MB`, `35.21 GB`."""
    if abs(round(n)) < 1000:
        return f"{n:.0f} B"
    value = float(n)
    for unit in _UNITS[1:]:
        value /= 1000
        digits = 2 if unit not in ("kB", "MB") else 1
        if abs(round(value, digits)) < 1000 or unit == _UNITS[-1]:
            return f"{value:.{digits}f} {unit}"
    raise AssertionError("unreachable")  # pragma: no cover


def human_rate(n: float, seconds: float) -> str:
    """`n` bytes over `seconds` as `123.4 MB/s` (`-` when no time passed)."""
    return f"{human_bytes(n / seconds)}/s" if seconds > 0 else "-"
