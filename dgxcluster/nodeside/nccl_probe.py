#!/usr/bin/env python3
"""NCCL bus-bandwidth probe through torch.distributed, printed in nccl-tests' table format.

Why it exists: nccl-tests spans nodes only through MPI, which vLLM images rarely carry, while
torch and its NCCL are always there. So `verify-ib --bandwidth` falls back to this script,
and prints what nccl-tests would, so one parser (`dgxcluster.facts.nccl_tests`) reads both.

Standalone on purpose (stdlib + torch, no dgxcluster import): it is copied into containers
and onto GPU machines as a single file. One process per GPU, any number of nodes:

    python -m torch.distributed.run --standalone --nproc_per_node 2 nccl_probe.py -b 1M -e 1G
    python -m torch.distributed.run --nnodes 2 --node_rank R --nproc_per_node 1 \\
        --master_addr HEAD_FABRIC_IP --master_port 29511 nccl_probe.py -b 64M -e 1G -f 4

Bus bandwidth is computed as nccl-tests does (its doc/PERFORMANCE.md), so figures compare:
all_reduce busbw = algbw * 2(n-1)/n, all_gather busbw = algbw * (n-1)/n, algbw = size / time,
GB/s = 1e9 bytes/s. For all_gather, `size` is the whole gathered buffer and `count` the
elements each rank sends, as nccl-tests 2.18 prints them. torch has no out-of-place
all_reduce, so that op's out-of-place columns read N/A rather than a number it did not measure.
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import sys
import time
from typing import Any

PROBE_VERSION = "1"
OPS = ("all_reduce", "all_gather")
DTYPE_BYTES = 4  # float32, the nccl-tests default type
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


def parse_size(text: str) -> int:
    """nccl-tests size syntax: 1024, 64K, 1M, 4G (binary units)."""
    m = re.fullmatch(r"\s*(\d+)\s*([KMG]?)B?\s*", text.upper())
    if not m:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 1M, 256M, 1G)")
    return int(m.group(1)) * _UNITS[m.group(2)]


def sizes(min_bytes: int, max_bytes: int, factor: int) -> list[int]:
    out, s = [], max(min_bytes, 1)
    while s <= max_bytes:
        out.append(s)
        if factor <= 1:
            break
        s *= factor
    return out


def bus_factor(op: str, nranks: int) -> float:
    """busbw / algbw, from nccl-tests' PERFORMANCE.md."""
    if nranks <= 1:
        return 0.0
    if op == "all_reduce":
        return 2.0 * (nranks - 1) / nranks
    if op == "all_gather":
        return (nranks - 1) / nranks
    raise ValueError(op)


def aligned(size: int, nranks: int) -> int:
    """Round size down so every rank holds a whole number of float32 elements."""
    unit = DTYPE_BYTES * nranks
    return max(unit, size // unit * unit)


def fmt_time(us: float) -> str:
    if us >= 100000:
        return f"{us:.0f}"
    if us >= 100:
        return f"{us:.1f}"
    return f"{us:.2f}"


def fmt_measure(m: tuple[float, float, float, int] | None) -> str:
    """One out-of-place or in-place group: time(us) algbw busbw #wrong."""
    if m is None:
        return f"  {'N/A':>7}  {'N/A':>6}  {'N/A':>6}  {'N/A':>6}"
    us, alg, bus, wrong = m
    return f"  {fmt_time(us):>7}  {alg:6.2f}  {bus:6.2f}  {wrong:6d}"


def fmt_row(size: int, count: int, redop: str,
            oop: tuple[float, float, float, int] | None,
            ip: tuple[float, float, float, int] | None) -> str:
    return (f"{size:12d}  {count:12d}  {'float':>8}  {redop:>6}  {-1:6d}"
            + fmt_measure(oop) + fmt_measure(ip))


HEADER = (
    "#                                                              out-of-place"
    "                       in-place          \n"
    "#       size         count      type   redop    root     time   algbw   busbw  #wrong"
    "     time   algbw   busbw  #wrong \n"
    "#        (B)    (elements)                               (us)  (GB/s)  (GB/s)        "
    "     (us)  (GB/s)  (GB/s)         "
)


def avg_busbw(rows: list[tuple[Any, ...]]) -> float:
    vals = [m[2] for r in rows for m in (r[3], r[4]) if m is not None]
    return sum(vals) / len(vals) if vals else 0.0


# -- the part that needs torch and GPUs ------------------------------------------------------

class _Bench:
    def __init__(self, torch: Any, dist: Any, rank: int, world: int, device: Any,
                 warmup: int, iters: int) -> None:
        self.torch, self.dist = torch, dist
        self.rank, self.world, self.device = rank, world, device
        self.warmup, self.iters = warmup, iters

    def _timed(self, fn: Any) -> float:
        torch, dist = self.torch, self.dist
        for _ in range(self.warmup):
            fn()
        torch.cuda.synchronize(self.device)
        dist.barrier()
        torch.cuda.synchronize(self.device)
        t0 = time.perf_counter()
        for _ in range(self.iters):
            fn()
        torch.cuda.synchronize(self.device)
        dt = (time.perf_counter() - t0) / self.iters
        t = torch.tensor([dt], dtype=torch.float64, device=self.device)
        dist.all_reduce(t)  # nccl-tests reports the mean over ranks
        return float(t.item()) / self.world

    def _sum_wrong(self, wrong: Any) -> int:
        w = wrong.to(self.torch.int64).reshape(1)
        self.dist.all_reduce(w)
        return int(w.item())

    def _measure(self, op: str, size: int, fn: Any) -> tuple[float, float, float, int]:
        sec = self._timed(fn)
        alg = size / 1e9 / sec
        return sec * 1e6, alg, alg * bus_factor(op, self.world), 0

    def all_reduce(self, size: int) -> tuple[int, None, tuple[float, float, float, int]]:
        torch, dist = self.torch, self.dist
        count = size // DTYPE_BYTES
        buf = torch.ones(count, dtype=torch.float32, device=self.device)
        us, alg, bus, _ = self._measure("all_reduce", size, lambda: dist.all_reduce(buf))
        buf.fill_(float(self.rank + 1))
        dist.all_reduce(buf)
        expect = self.world * (self.world + 1) / 2
        wrong = self._sum_wrong((buf != expect).sum())
        return count, None, (us, alg, bus, wrong)

    def all_gather(self, size: int) -> tuple[int, tuple[float, float, float, int],
                                             tuple[float, float, float, int]]:
        torch, dist = self.torch, self.dist
        count = size // DTYPE_BYTES // self.world
        out = torch.empty(count * self.world, dtype=torch.float32, device=self.device)
        inp = torch.full((count,), float(self.rank), dtype=torch.float32, device=self.device)
        oop = self._measure("all_gather", size,
                            lambda: dist.all_gather_into_tensor(out, inp))
        wrong_oop = self._check_gather(out, count)
        mine = out[self.rank * count:(self.rank + 1) * count]
        ip = self._measure("all_gather", size,
                           lambda: dist.all_gather_into_tensor(out, mine))
        mine.fill_(float(self.rank))
        dist.all_gather_into_tensor(out, mine)
        wrong_ip = self._check_gather(out, count)
        return count, (*oop[:3], wrong_oop), (*ip[:3], wrong_ip)

    def _check_gather(self, out: Any, count: int) -> int:
        torch = self.torch
        view = out.view(self.world, count)
        expect = torch.arange(self.world, dtype=torch.float32, device=self.device).view(-1, 1)
        return self._sum_wrong((view != expect).sum())


def _device_line(torch: Any, rank: int, local_rank: int) -> str:
    props = torch.cuda.get_device_properties(local_rank)
    bus = (f"{getattr(props, 'pci_domain_id', 0):04x}:{getattr(props, 'pci_bus_id', 0):02x}:"
           f"{getattr(props, 'pci_device_id', 0):02x}")
    return (f"#  Rank {rank:2d} Group  0 Pid {os.getpid():6d} on {socket.gethostname():>10} "
            f"device {local_rank:2d} [{bus}] {props.name}")


def _say(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("-b", "--minbytes", type=parse_size, default=parse_size("64M"))
    p.add_argument("-e", "--maxbytes", type=parse_size, default=parse_size("1G"))
    p.add_argument("-f", "--stepfactor", type=int, default=2)
    p.add_argument("-w", "--warmup_iters", type=int, default=5)
    p.add_argument("-n", "--iters", type=int, default=20)
    p.add_argument("--ops", default=",".join(OPS),
                   help="comma-separated: all_reduce,all_gather (default both)")
    a = p.parse_args(argv)
    ops = [o.strip() for o in a.ops.split(",") if o.strip()]
    bad = [o for o in ops if o not in OPS]
    if bad or not ops:
        p.error(f"--ops: unknown {bad or ops}; choose from {', '.join(OPS)}")

    import torch  # type: ignore[import-not-found,unused-ignore]
    import torch.distributed as dist  # type: ignore[import-not-found,unused-ignore]

    rank = int(os.environ.get("RANK", "0"))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if not torch.cuda.is_available():
        _say("# nccl_probe: no CUDA device visible; NCCL needs a GPU")
        return 2
    torch.cuda.set_device(local_rank)
    device = torch.device("cuda", local_rank)
    try:
        dist.init_process_group("nccl", device_id=device)
    except TypeError:  # torch < 2.3 has no device_id
        dist.init_process_group("nccl")
    lines: list[Any] = [None] * world
    dist.all_gather_object(lines, _device_line(torch, rank, local_rank))
    bench = _Bench(torch, dist, rank, world, device, a.warmup_iters, a.iters)
    nccl = ".".join(str(x) for x in torch.cuda.nccl.version()) if hasattr(
        torch.cuda.nccl, "version") else "?"
    status = 0
    for op in ops:
        if rank == 0:
            _say(f"# dgxcluster nccl_probe {PROBE_VERSION} (torch.distributed) "
                 f"torch {torch.__version__} nccl {nccl}")
            _say(f"# Collective test starting: {op}_perf")
            _say(f"# nThread 1 nGpus 1 minBytes {a.minbytes} maxBytes {a.maxbytes} "
                 f"step: {a.stepfactor}(factor) warmup iters: {a.warmup_iters} "
                 f"iters: {a.iters} agg iters: 1 validation: 1 graph: 0")
            _say("#\n# Using devices")
            for ln in lines:
                _say(str(ln))
            _say("#\n" + HEADER)
        rows: list[tuple[Any, ...]] = []
        wrong_total = 0
        for size in sizes(a.minbytes, a.maxbytes, a.stepfactor):
            size = aligned(size, world)
            if op == "all_reduce":
                count, oop, ip = bench.all_reduce(size)
                redop = "sum"
            else:
                count, oop, ip = bench.all_gather(size)
                redop = "none"
            rows.append((size, count, redop, oop, ip))
            wrong_total += sum(m[3] for m in (oop, ip) if m is not None)
            if rank == 0:
                _say(fmt_row(size, count, redop, oop, ip))
        if rank == 0:
            _say(f"# Out of bounds values : {wrong_total} {'OK' if wrong_total == 0 else 'FAILED'}")
            _say(f"# Avg bus bandwidth    : {avg_busbw(rows):g} ")
            _say("#")
            _say(f"# Collective test concluded: {op}_perf")
            _say("#")
        if wrong_total:
            status = 1
    dist.destroy_process_group()
    return status


if __name__ == "__main__":
    sys.exit(main())
