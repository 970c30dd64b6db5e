"""Serving metrics and node readings as `status` and `status --watch` print them (rich markup)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dgxcluster.facts.meminfo import Memory
    from dgxcluster.facts.nvidia_smi import Gpu
    from dgxcluster.facts.vllm_metrics import Latency, ServingMetrics


def _count(x: float | None) -> str:
    return "?" if x is None else f"{x:g}"


def _tps(x: float | None) -> str:
    return "-" if x is None else f"{x:,.1f}"


def seconds(x: float | None) -> str:
    """A latency: `850 ms`, `1.42 s`; `-` where nothing was observed."""
    if x is None:
        return "-"
    return f"{x * 1000:.0f} ms" if x < 1 else f"{x:.2f} s"


def latency(name: str, lat: Latency) -> str:
    return f"{name} p50 {seconds(lat.p50)} p95 {seconds(lat.p95)}"


def serving_lines(m: ServingMetrics) -> list[str]:
    """Three lines: load, throughput, latency (each saying what window it covers)."""
    kv = "?" if m.kv_cache_usage is None else f"{100 * m.kv_cache_usage:.1f}%"
    load = (f"{_count(m.requests_running)} running, {_count(m.requests_waiting)} waiting, "
            f"KV cache {kv}")
    if m.interval_s is None:
        rates = "throughput: needs a second scrape"
    else:
        rates = (f"prompt {_tps(m.prompt_tps)} tok/s, generation {_tps(m.generation_tps)} "
                 f"tok/s (last {m.interval_s:.1f} s)")
    n = int(m.ttft.count)
    lat = (f"{latency('TTFT', m.ttft)}, {latency('ITL', m.itl)} ({m.window}, "
           f"{n} request{'' if n == 1 else 's'})")
    return [load, rates, lat]


def gpu_cells(gpus: list[Gpu]) -> tuple[str, str, str]:
    """(utilisation, temperature, power) of a node's GPUs, one line per GPU."""
    util = "\n".join("-" if g.utilization_pct is None else f"{g.utilization_pct}%" for g in gpus)
    temp = "\n".join("-" if g.temperature_c is None else f"{g.temperature_c}C" for g in gpus)
    power = "\n".join(g.power.split("/")[0].strip() or "-" for g in gpus)
    return util or "-", temp or "-", power or "-"


def memory_cell(mem: Memory | None) -> str:
    """`41.2 GiB / 119.7 GiB` (used / total; on a Spark, CPU and GPU together)."""
    from dgxcluster.core.units import human_bytes

    if mem is None:
        return "-"
    total = human_bytes(mem.total_bytes, binary=True)
    used = "?" if mem.used_bytes is None else human_bytes(mem.used_bytes, binary=True)
    return f"{used} / {total}"
