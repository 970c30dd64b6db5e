"""Will it fit: per-node memory from safetensors sizes, TP x PP and vLLM's memory share."""

from __future__ import annotations

from dgxcluster.vllmcli import fit

GB = 10**9
SPARK = fit.NOMINAL_TOTAL[128]


def test_gpt_oss_120b_fits_on_two_sparks() -> None:
    # 65.3 GB of safetensors without the original/ and metal/ folders (public download notes)
    f = fit.estimate(int(65.3 * GB), tensor_parallel_size=2, total_bytes=SPARK)
    assert f.fits and f.ranks == 2 and f.gpu_memory_utilization == fit.SAFE_GPU_MEMORY_UTILIZATION
    assert f.per_node_weights == -(-int(65.3 * GB) // 2)  # rounded up
    assert f.kv_cache == f.budget - f.per_node_weights - f.overhead
    assert f.summary().startswith("fits: weights 60.8 GiB / 2 rank(s) = 30.4 GiB per node")


def test_llama_70b_bf16_does_not_fit_on_one_spark_and_says_by_how_much() -> None:
    f = fit.estimate(141 * GB, tensor_parallel_size=1, total_bytes=SPARK)
    assert not f.fits and f.kv_cache < 0
    assert "does not fit" in f.summary() and "131.3 GiB per node" in f.summary()
    assert fit.estimate(141 * GB, tensor_parallel_size=2, total_bytes=SPARK).fits


def test_the_smaller_spark_halves_the_room() -> None:
    assert fit.estimate(141 * GB, tensor_parallel_size=2, total_bytes=SPARK).fits
    assert not fit.estimate(141 * GB, tensor_parallel_size=2, total_bytes=fit.NOMINAL_TOTAL[64]).fits
    assert fit.estimate(141 * GB, tensor_parallel_size=4, total_bytes=fit.NOMINAL_TOTAL[64]).fits


def test_pipeline_parallel_splits_too_and_utilization_counts() -> None:
    a = fit.estimate(200 * GB, tensor_parallel_size=2, pipeline_parallel_size=2, total_bytes=SPARK)
    assert a.ranks == 4 and a.fits
    b = fit.estimate(200 * GB, tensor_parallel_size=2, pipeline_parallel_size=2, total_bytes=SPARK,
                     gpu_memory_utilization=0.5)
    assert b.kv_cache < a.kv_cache


def test_a_utilization_above_what_a_spark_can_start_with_warns() -> None:
    ok = fit.estimate(GB, tensor_parallel_size=1, total_bytes=SPARK, gpu_memory_utilization=0.8)
    assert ok.warnings == ()
    (w,) = fit.estimate(GB, tensor_parallel_size=1, total_bytes=SPARK, gpu_memory_utilization=0.9).warnings
    assert "0.9 is above 0.83" in w


def test_only_safetensors_count_as_weights() -> None:
    files = {"model-00001-of-00002.safetensors": 5 * GB, "model-00002-of-00002.safetensors": 3 * GB,
             "original/consolidated.pth": 9 * GB, "config.json": 1000,
             "model.safetensors.index.json": 20000}
    assert fit.safetensors_bytes(files) == 8 * GB
