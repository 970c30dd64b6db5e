"""vLLM's start-up log read on real excerpts from public issues and NVIDIA's playbooks (the
lines are vLLM's and uvicorn's format strings; see dgxcluster/facts/vllm_log.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from dgxcluster.facts import ParseError, vllm_log

REAL = Path(__file__).resolve().parents[1] / "fixtures" / "real"


def body(name: str) -> str:
    first, _, rest = (REAL / name).read_text().partition("\n")
    assert first.startswith("# source:")
    return rest


@pytest.mark.parametrize(("name", "phase", "detail", "url"), [
    ("vllm_log_loading_shards_amd_strix_pr5.txt", "loading", "loading weights (2/3 shards)", None),
    ("vllm_log_kv_cache_cuda_graphs_init_engine_glm-v_issue204.txt", "engine-ready",
     "engine initialised in 25.99 s", None),
    ("vllm_log_api_server_up_gb10_eugr_pr200.txt", "api-starting",
     "API server starting on http://0.0.0.0:8355", "http://0.0.0.0:8355"),
    ("vllm_log_api_server_0_ansi_vllm_pr33756.txt", "api-starting",
     "API server starting on http://0.0.0.0:8000", "http://0.0.0.0:8000"),
    ("uvicorn_application_startup_complete_speculative_decoding_playbook.txt", "ready",
     "API server up (Application startup complete)", None),
])
def test_every_capture_reads_as_its_phase(name: str, phase: str, detail: str, url: str | None) -> None:
    p = vllm_log.parse(body(name))
    assert (p.phase, p.detail, p.url) == (phase, detail, url)
    assert p.ready == (phase == "ready")


def test_each_line_of_the_start_up_in_order() -> None:
    lines = body("vllm_log_kv_cache_cuda_graphs_init_engine_glm-v_issue204.txt").splitlines()
    phases = [p.phase for p in map(vllm_log.read_line, lines) if p is not None]
    assert phases == ["compiling", "kv-cache", "kv-cache", "cuda-graphs", "cuda-graphs",
                      "cuda-graphs", "engine-ready"]
    graphs = vllm_log.read_line(lines[5])
    assert graphs is not None
    assert graphs.detail == "capturing CUDA graphs (mixed prefill-decode, PIECEWISE, 100%)"


def test_whole_start_up_ends_ready_and_keeps_the_url() -> None:
    text = "".join(body(n) for n in ("vllm_log_loading_shards_amd_strix_pr5.txt",
                                     "vllm_log_api_server_up_gb10_eugr_pr200.txt",
                                     "uvicorn_application_startup_complete_speculative_decoding_playbook.txt"))
    p = vllm_log.parse(text)
    assert p.ready and p.url == "http://0.0.0.0:8355"


def test_a_failure_is_final() -> None:
    text = (body("vllm_log_loading_shards_amd_strix_pr5.txt")
            + "Traceback (most recent call last):\n"
            + "RuntimeError: Engine core initialization failed. See root cause above.\n"
            + "INFO:     Application startup complete.\n")
    p = vllm_log.parse(text)
    assert p.phase == "failed" and not p.ready and "Traceback" in p.detail


@pytest.mark.parametrize("text", ["", "hello\n", "INFO 01-01 [x.py:1] something else\n"])
def test_not_vllm(text: str) -> None:
    with pytest.raises(ParseError, match="could not parse vLLM log output"):
        vllm_log.parse(text)


def test_a_native_ranks_join_lines() -> None:
    """The lines of vLLM's multi-node executor (serve.py run_headless, parallel_state.py)."""
    lines = [
        "INFO 12-02 00:24:08 [serve.py:187] Launching vLLM (v0.20.1) headless multiproc executor, "
        "with head node address 192.168.100.10:29501 for torch.distributed process group.",
        "(Worker pid=220) INFO 12-02 00:24:09 [parallel_state.py:1402] world_size=2 rank=1 "
        "local_rank=0 distributed_init_method=tcp://192.168.100.10:29501 backend=nccl",
        "(Worker_TP1 pid=220) INFO 12-02 00:24:10 [parallel_state.py:1716] rank 1 in world size 2 "
        "is assigned as DP rank 0, PP rank 0, PCP rank 0, TP rank 1, EP rank N/A, EPLB rank N/A",
        "torch.distributed.DistNetworkError: The client socket has timed out after 600000ms while "
        "trying to connect to (192.168.100.10, 29501).",
    ]
    got = [vllm_log.read_line(ln) for ln in lines]
    assert [(p.phase, p.detail) for p in got if p] == [
        ("connecting", "joining the process group at 192.168.100.10:29501"),
        ("connecting", "joining the process group at 192.168.100.10:29501"),
        ("joined", "joined: rank 1 of 2"),
        ("failed", "torch.distributed.DistNetworkError"),
    ]


def test_a_data_parallel_replicas_join_line() -> None:
    """vllm/entrypoints/cli/serve.py run_headless, a headless node of data parallel."""
    got = vllm_log.read_line(
        "INFO 12-02 05:00:00 [serve.py:240] Launching 1 data parallel engine(s) in headless mode, "
        "with head node address tcp://192.168.100.10:29550.")
    assert got is not None and (got.phase, got.detail) == (
        "connecting", "replica joining the head's data-parallel front end at "
        "tcp://192.168.100.10:29550")
