"""`/proc/meminfo`: how much memory a node has. On a DGX Spark the GPU and the CPU share it, so
this is also what vLLM's `--gpu-memory-utilization` is a fraction of (nvidia-smi prints "Not
Supported" for GB10's memory; NVML tools fall back to the system's total, as gpud PR #1170 does:
128501256192 B on a 128 GB Spark, `MemTotal: 125489508 kB`)."""

from __future__ import annotations

from dataclasses import dataclass

ARGV = ["cat", "/proc/meminfo"]
KIB = 1024


@dataclass(frozen=True)
class MemInfo:
    total_bytes: int = 0
    available_bytes: int | None = None
    error: str | None = None


def parse(text: str) -> MemInfo:
    """`Key:  value kB` lines (proc(5)); MemTotal is required, MemAvailable read when there."""
    values: dict[str, int] = {}
    for line in text.splitlines():
        key, sep, rest = line.partition(":")
        words = rest.split()
        if not sep or not words or not words[0].isdigit():
            continue
        unit = words[1] if len(words) > 1 else ""
        values[key.strip()] = int(words[0]) * (KIB if unit == "kB" else 1)
    total = values.get("MemTotal")
    if not total:
        first = next((ln.strip() for ln in text.splitlines() if ln.strip()), "(empty)")
        return MemInfo(error=f"could not parse /proc/meminfo (no MemTotal): {first[:120]}")
    return MemInfo(total, values.get("MemAvailable"))


def spark_variant(total_bytes: int) -> int | None:
    """128 or 64 (GB) for a DGX Spark's MemTotal (a 128 GB Spark shows about 119.7 GiB: some of
    the memory is reserved); None for anything else (the testbed's nodes, a workstation)."""
    gib = total_bytes / KIB**3
    if 110 <= gib <= 128:
        return 128
    if 55 <= gib <= 64:
        return 64
    return None
