"""`/proc/meminfo`: a node's memory, total and available.

On a DGX Spark the CPU and the GPU share one LPDDR5x pool, so `nvidia-smi` says "Not
Supported" for memory and the kernel's view is the one that counts: what vLLM's weights and
KV cache take shows up here. `MemAvailable` is the kernel's estimate of memory available to
new work without swapping (Linux Documentation/filesystems/proc.rst; since 3.14); the values
are in KiB, printed as `kB`. Used = total - available.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from dgxcluster.facts import ParseError

FIELDS = ("MemTotal", "MemAvailable")
ARGV = ["grep", "-E", f"^({'|'.join(FIELDS)}):", "/proc/meminfo"]
COMMAND = "/proc/meminfo"

_LINE = re.compile(r"^(?P<key>\w+(?:\(\w+\))?):\s+(?P<value>\d+)(?:\s+kB)?\s*$")


@dataclass(frozen=True)
class Memory:
    total_bytes: int
    available_bytes: int | None  # None on kernels without MemAvailable

    @property
    def used_bytes(self) -> int | None:
        return None if self.available_bytes is None else self.total_bytes - self.available_bytes

    def to_json(self) -> dict[str, object]:
        return {"total_bytes": self.total_bytes, "available_bytes": self.available_bytes,
                "used_bytes": self.used_bytes}


def parse(text: str) -> Memory:
    values: dict[str, int] = {}
    for line in text.splitlines():
        m = _LINE.match(line.strip())
        if m:
            values[m.group("key")] = int(m.group("value")) * 1024
    if "MemTotal" not in values:
        raise ParseError(COMMAND, "no 'MemTotal:' line", text)
    return Memory(values["MemTotal"], values.get("MemAvailable"))


def spark_variant(total_bytes: int) -> int | None:
    """128 or 64 (GB) for a DGX Spark's MemTotal (a 128 GB Spark shows about 119.7 GiB: some of
    the memory is reserved); None for anything else (the testbed's nodes, a workstation).
    NVML tools fall back to the system's total on GB10 too (gpud PR #1170: 128501256192 B)."""
    gib = total_bytes / 1024**3
    if 110 <= gib <= 128:
        return 128
    if 55 <= gib <= 64:
        return 64
    return None
