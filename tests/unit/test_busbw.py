"""NCCL bus bandwidth for N ranks as nccl-tests defines it, on synthetic timings: the
probe (node side) and verify-ib (which recomputes it from size and time) agree."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from dgxcluster.nodeside import nccl_probe
from dgxcluster.verify import busbw
from dgxcluster.verify.bandwidth import judge_nccl
from dgxcluster.verify.results import Level

GiB = 1 << 30


@pytest.mark.parametrize("n", range(1, 9))
def test_probe_and_verify_use_one_definition(n: int) -> None:
    for op in busbw.OPS:
        assert nccl_probe.bus_factor(op, n) == busbw.bus_factor(op, n)


def test_n_rank_math_on_synthetic_timings() -> None:
    # a ring of links at 20 GB/s each: all_gather moves (N-1)/N of the buffer over each link
    for n in (2, 3, 4, 8):
        t_us = GiB * (n - 1) / n / 20e9 * 1e6
        assert busbw.busbw("all_gather", GiB, t_us, n) == pytest.approx(20.0)
        assert busbw.algbw(GiB, t_us) == pytest.approx(20.0 * n / (n - 1))
        t_us = GiB * 2 * (n - 1) / n / 20e9 * 1e6
        assert busbw.busbw("all_reduce", GiB, t_us, n) == pytest.approx(20.0)
    assert busbw.bus_factor("all_gather", 2) == 0.5 and busbw.bus_factor("all_reduce", 2) == 1.0
    assert busbw.bus_factor("all_reduce", 4) == 1.5 and busbw.bus_factor("all_gather", 1) == 0.0
    with pytest.raises(ValueError, match="unknown collective"):
        busbw.bus_factor("broadcast", 2)


def test_the_floor_in_algbw_scales_with_n_and_busbw_does_not() -> None:
    assert busbw.algbw_floor("all_gather", 21.875, 2) == pytest.approx(43.75)
    assert busbw.algbw_floor("all_gather", 21.875, 4) == pytest.approx(29.1667, rel=1e-4)
    assert busbw.algbw_floor("all_reduce", 21.875, 4) == pytest.approx(14.5833, rel=1e-4)
    assert busbw.default_floor(False) == 21.875 and busbw.default_floor(True) == 10.0


def _table(op: str, n: int, t_us: float, printed: float) -> str:
    size = 4 * GiB
    cell = f"  {t_us:9.1f}  {size / t_us / 1e3:6.2f}  {printed:6.2f}       0"
    return (f"# dgxcluster nccl_probe 1 (torch.distributed)\n# Collective test starting: {op}_perf\n"
            "#       size         count      type   redop    root     time   algbw   busbw  #wrong"
            "     time   algbw   busbw  #wrong \n"
            f"  {size:12d}  {size // 4:12d}     float    none      -1{cell}{cell}\n"
            f"# Collective test concluded: {op}_perf\n")


def test_verify_recomputes_busbw_for_the_ranks_that_ran() -> None:
    t_ag = 4 * GiB * 3 / 4 / 22e9 * 1e6  # 4 ranks at 22 GB/s
    t_ar = 4 * GiB * 2 * 3 / 4 / 22e9 * 1e6
    text = _table("all_gather", 4, t_ag, 22.0) + _table("all_reduce", 4, t_ar, 22.0)
    res = {r.check: r for r in judge_nccl(text, text, {}, 21.875, 2, nranks=4)}
    assert res["nccl-all_gather"].status == Level.PASS
    assert "busbw 22.00 GB/s at 4 GiB" in res["nccl-all_gather"].detail
    assert "over 4 ranks" in res["nccl-all_gather"].detail
    assert "the probe printed" not in res["nccl-all_gather"].detail
    # the same timings read as 2 ranks: all_gather busbw 22 * (1/2) / (3/4) = 14.67 < floor
    two = {r.check: r for r in judge_nccl(text, text, {}, 21.875, 2, nranks=2)}
    assert two["nccl-all_gather"].status == Level.FAIL
    assert "busbw 14.67 GB/s" in two["nccl-all_gather"].detail
    assert "the probe printed busbw 22.00, not the 2-rank value" in two["nccl-all_gather"].detail


def test_the_stand_in_follows_n_ranks() -> None:
    here = Path(__file__).resolve().parents[2]
    spec = importlib.util.spec_from_file_location(
        "nccl_standin_n", here / "images" / "testbed" / "standin" / "nccl_standin.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod.CAPTURES = here / "tests" / "fixtures" / "real"
    for n in (2, 3, 4, 8):
        text = mod.tables("ngc-ibext", [f"node{i}" for i in range(1, n + 1)])
        assert text.count("#  Rank ") == 2 * n
        res = {r.check: r for r in judge_nccl(text, text, {}, 21.875, 2, nranks=n)}
        for op in busbw.OPS:  # the captured 22.46 GB/s per link, whatever N
            assert res[f"nccl-{op}"].detail.startswith("busbw 22.46 GB/s at 4 GiB"), (n, op)
            assert "the probe printed" not in res[f"nccl-{op}"].detail
