"""Sizes and rates as people read them: the one byte formatter every message uses.

Decimal units (kB = 1000 B, as `docker images` and network rates count) by default, with the
unit chosen so the number stays between 1 and 1000: a 300 kB file is "300.0 kB", never
"0.00 GB", and a 35 GB image is "35.00 GB". Memory is shown in binary units (`binary=True`:
GiB = 1024**3 B) with one decimal, as vLLM ("Model loading took 15.2 GiB") and nvidia-smi
count it, so a will-it-fit estimate reads like vLLM's own start-up log.
"""

from __future__ import annotations

_DECIMAL = ("B", "kB", "MB", "GB", "TB", "PB")
_BINARY = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")


def human_bytes(n: float, *, binary: bool = False) -> str:
    """`512 B`, `1.5 kB`, `20.3 MB`, `35.21 GB`; binary: `60.8 GiB`, `512.0 MiB`."""
    if abs(round(n)) < 1000:
        return f"{n:.0f} B"
    units, base = (_BINARY, 1024) if binary else (_DECIMAL, 1000)
    value = float(n)
    for unit in units[1:]:
        value /= base
        digits = 1 if binary or unit in ("kB", "MB") else 2
        if abs(round(value, digits)) < 1000 or unit == units[-1]:
            return f"{value:.{digits}f} {unit}"
    raise AssertionError("unreachable")  # pragma: no cover


def human_rate(n: float, seconds: float) -> str:
    """`n` bytes over `seconds` as `123.4 MB/s` (`-` when no time passed)."""
    return f"{human_bytes(n / seconds)}/s" if seconds > 0 else "-"
