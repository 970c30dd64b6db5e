"""NCCL bus bandwidth for N ranks, as nccl-tests defines it (NVIDIA/nccl-tests
doc/PERFORMANCE.md), and the floor verify-ib applies. Pure.

    algbw = size / time                      (GB/s = 1e9 bytes/s; size = the whole buffer)
    all_gather busbw = algbw * (N - 1) / N
    all_reduce busbw = algbw * 2 (N - 1) / N

busbw is the rate each link carries in a ring, so it does not depend on N: one floor per
link serves any number of ranks, while the algbw that meets it changes with N
(`algbw_floor`). The default floor is NVIDIA's (dgx-spark-playbooks spark_cluster_setup.py:
MIN_NCCL_TEST_BW = 21.875 GB/s, 175 Gb/s; MIN_NCCL_TEST_BW_RING = 10 GB/s on a ring, where
both of a node's ports carry traffic through the same two PCIe x4 links).
"""

from __future__ import annotations

OPS = ("all_gather", "all_reduce")
FLOOR_SWITCH = 21.875
FLOOR_RING = 10.0


def bus_factor(op: str, nranks: int) -> float:
    """busbw / algbw for `op` over `nranks` ranks (0 for a single rank: nothing moves)."""
    if nranks <= 1:
        return 0.0
    if op == "all_gather":
        return (nranks - 1) / nranks
    if op == "all_reduce":
        return 2.0 * (nranks - 1) / nranks
    raise ValueError(f"unknown collective {op!r} (one of {', '.join(OPS)})")


def algbw(size_bytes: int, time_us: float) -> float:
    return size_bytes / 1e9 / (time_us / 1e6)


def busbw(op: str, size_bytes: int, time_us: float, nranks: int) -> float:
    return algbw(size_bytes, time_us) * bus_factor(op, nranks)


def algbw_floor(op: str, busbw_floor: float, nranks: int) -> float:
    """The algbw that `nranks` ranks must reach for `op` to meet `busbw_floor`."""
    factor = bus_factor(op, nranks)
    return busbw_floor / factor if factor else 0.0


def default_floor(point_to_point: bool) -> float:
    return FLOOR_RING if point_to_point else FLOOR_SWITCH
