"""Will it fit: /proc/meminfo read on real output, the served weights from the model check's own
scans, and each node's verdict in start's preflight (refused with the numbers, --force)."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from dgxcluster.facts import meminfo
from dgxcluster.inventory.schema import InventoryModel
from dgxcluster.models.check import start_check
from dgxcluster.serving.fitcheck import FitCheck, _Answer, for_inventory, read_memory
from tests.fakes import FakeConnection, Reply
from tests.unit.test_facts import GARBAGE, REAL, body
from tests.unit.test_model_plan import BIG, SMALL, entry

GIB = 1024**3
# A 128 GB DGX Spark: `MemTotal: 125443120 kB (~119 GiB)` (a GB10 hardware report, HP ZGX Nano,
# 2026-03); gpud PR #1170 reads 128501256192 B (= 125489508 kB) through sysinfo on another one.
SPARK_128 = "MemTotal:       125443120 kB\nMemFree:         3778892 kB\nMemAvailable:   20217156 kB\n"


def test_meminfo_of_a_real_kernel() -> None:
    m = meminfo.parse(body(REAL / "meminfo_testbed_host_linux6.18_24GiB.txt"))
    assert m.total_bytes == 24683584 * 1024 and m.available_bytes and m.available_bytes < m.total_bytes
    assert meminfo.spark_variant(m.total_bytes) is None  # the testbed is no Spark


def test_a_128_gb_spark_reads_as_one() -> None:
    m = meminfo.parse(SPARK_128)
    assert m.total_bytes == 125443120 * 1024 and meminfo.spark_variant(m.total_bytes) == 128
    assert meminfo.spark_variant(128501256192) == 128
    assert meminfo.spark_variant(60 * GIB) == 64


@pytest.mark.parametrize("text", GARBAGE)
def test_meminfo_garbage_is_an_answer_not_an_exception(text: str) -> None:
    conn = FakeConnection("node1").on("meminfo", Reply(stdout=text))
    said = read_memory(conn)
    assert isinstance(said, str) and "could not parse /proc/meminfo" in said


def test_the_weights_are_the_safetensors_of_the_served_commit_from_the_scans() -> None:
    check = start_check("org/m", None, "~/.cache/huggingface", "a")
    files = {"model-00001.safetensors": BIG, "model-00002.safetensors": "c" * 64,
             "config.json": SMALL}
    e = entry({BIG: 40 * GIB, "c" * 64: 20 * GIB, SMALL: 5}, files=files)
    assert check.weights({"a": e, "b": e}) == 60 * GIB
    # no node complete: nothing to estimate from
    assert check.weights({"a": None, "b": RuntimeError("down")}) is None
    only_config = entry({SMALL: 5}, files={"config.json": SMALL})
    assert check.weights({"a": only_config}) is None


class Inner:
    """A model check that found the model everywhere except where told."""

    label = "org/m"
    skip_reason = ""

    def __init__(self, weights: int | None, missing: tuple[str, ...] = ()) -> None:
        self._weights = weights
        self.missing = missing
        self.seen: Mapping[str, object] = {}

    def read(self, conn: object, paths: object) -> object:
        return "entry"

    def judge(self, answers: Mapping[str, object]) -> dict[str, tuple[bool, str]]:
        self.seen = answers
        return {n: (False, "model org/m is not complete here") if n in self.missing
                else (True, "model org/m complete") for n in answers}

    def weights(self, answers: Mapping[str, object]) -> int | None:
        return self._weights


def judged(check: FitCheck, totals: dict[str, int]) -> dict[str, tuple[bool, str]]:
    return check.judge({n: _Answer("entry", meminfo.Memory(t, None)) for n, t in totals.items()})


SPARK = 125443120 * 1024


def test_a_model_that_fits_says_so_with_its_share_per_node() -> None:
    inner = Inner(65 * GIB)  # gpt-oss-120b's MXFP4 weights over TP 2
    v = judged(FitCheck(inner, 2, gpu_memory_utilization=0.8), {"a": SPARK, "b": SPARK})
    assert inner.seen == {"a": "entry", "b": "entry"}  # the model check got its own answers
    fine, text = v["a"]
    assert fine and text.startswith("model org/m complete; fits: 32.5 GiB of weights per node")
    assert "0.8 x 119.6 GiB" in text


def test_a_model_that_cannot_fit_is_refused_with_the_numbers_and_the_ways_out() -> None:
    check = FitCheck(Inner(230 * GIB), 2, gpu_memory_utilization=0.8)  # Qwen3-235B FP8 on 2
    fine, text = judged(check, {"a": SPARK})["a"]
    assert not fine
    assert ("does not fit: weights 230.0 GiB / 2 rank(s) = 115.0 GiB per node; vLLM's share "
            "0.8 x 119.6 GiB = 95.7 GiB") in text
    assert "serve.tensor_parallel_size" in text and "--force" in text
    forced = FitCheck(Inner(230 * GIB), 2, gpu_memory_utilization=0.8, force=True)
    fine, text = judged(forced, {"a": SPARK})["a"]
    assert fine and "does not fit" in text and "starting anyway (--force)" in text


def test_each_node_is_judged_on_its_own_memory() -> None:
    check = FitCheck(Inner(100 * GIB), 2, gpu_memory_utilization=0.8, memory_gb=128, recipe="r")
    v = judged(check, {"big": SPARK, "small": 60 * GIB})
    assert v["big"][0] and "recipe r" not in v["big"][1]
    assert not v["small"][0]
    assert "recipe r is for 128 GB Sparks; this node is a 64 GB Spark" in v["small"][1]


def test_what_the_model_check_refuses_stays_refused_and_unknowns_do_not_block() -> None:
    v = judged(FitCheck(Inner(GIB, missing=("b",)), 2), {"a": SPARK, "b": SPARK})
    assert v["b"] == (False, "model org/m is not complete here")
    assert judged(FitCheck(Inner(None), 2), {"a": SPARK})["a"] == (
        True, "model org/m complete; fit not estimated (no safetensors files in the snapshot)")
    unread = FitCheck(Inner(GIB), 2).judge({"a": _Answer("e", "no /proc")})
    assert unread["a"] == (True, "model org/m complete; fit not estimated (no /proc)")


def test_the_check_takes_tp_pp_and_utilization_from_the_inventory() -> None:
    inv = InventoryModel.model_validate({
        "nodes": [{"name": f"n{i}", "host": f"n{i}", "fabric_ip": f"10.0.0.{i}"} for i in (1, 2, 3, 4)],
        "serve": {"model": "org/m", "tensor_parallel_size": 2, "pipeline_parallel_size": 2,
                  "gpu_memory_utilization": 0.7}})
    check = for_inventory(Inner(GIB), inv, force=True)
    assert isinstance(check, FitCheck)
    assert (check.tensor_parallel_size, check.pipeline_parallel_size,
            check.gpu_memory_utilization, check.force) == (2, 2, 0.7, True)
    assert check.label == "org/m" and check.skip_reason == ""
