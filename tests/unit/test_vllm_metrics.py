"""Serving metrics from vLLM's /metrics (facts/vllm_metrics.py, facts/histogram.py, and the
scrape in core/servingmetrics.py): a real capture from an NVIDIA vLLM container, the
stand-in's live output, and Prometheus' histogram_quantile arithmetic case by case."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from dgxcluster.core import servingmetrics
from dgxcluster.facts import histogram
from dgxcluster.facts import vllm_metrics as serving
from tests.standin import modules

REAL = Path(__file__).resolve().parents[1] / "fixtures" / "real"
CAPTURE = REAL / "vllm_metrics_ngc_25.09_qwen3_4b_6_requests_armandossrecife.txt"
INF = math.inf


def body(path: Path) -> str:
    first, _, rest = path.read_text().partition("\n")
    assert first.startswith("# source:")
    return rest


# -- histogram_quantile, as promql/quantile.go bucketQuantile -------------------------------

def test_quantile_interpolates_inside_the_bucket_holding_the_rank() -> None:
    b = [(0.02, 0.0), (0.04, 4.0), (0.06, 6.0), (INF, 6.0)]
    assert histogram.bucket_quantile(0.5, b) == pytest.approx(0.035)  # 0.02 + 0.02 * 3/4
    assert histogram.bucket_quantile(0.95, b) == pytest.approx(0.057)  # 0.04 + 0.02 * 1.7/2


def test_quantile_edge_cases_follow_prometheus() -> None:
    assert histogram.bucket_quantile(0.5, [(1.0, 2.0), (INF, 10.0)]) == 1.0  # in +Inf: top bound
    assert histogram.bucket_quantile(0.1, [(1.0, 2.0), (INF, 10.0)]) == pytest.approx(0.5)  # from 0
    assert histogram.bucket_quantile(0.1, [(-1.0, 2.0), (INF, 10.0)]) == -1.0  # bound <= 0
    assert math.isnan(histogram.bucket_quantile(0.5, [(1.0, 3.0), (2.0, 5.0)]))  # no +Inf
    assert math.isnan(histogram.bucket_quantile(0.5, [(1.0, 0.0), (INF, 0.0)]))  # empty
    assert math.isnan(histogram.bucket_quantile(0.5, [(INF, 3.0)]))  # fewer than 2 buckets
    assert histogram.bucket_quantile(-0.1, [(1.0, 1.0), (INF, 1.0)]) == -INF
    assert histogram.bucket_quantile(1.1, [(1.0, 1.0), (INF, 1.0)]) == INF
    # unsorted input, duplicate bounds summed, a decreasing count forced monotonic
    assert histogram.bucket_quantile(0.5, [(INF, 4.0), (2.0, 4.0), (1.0, 1.0), (1.0, 1.0)]) == (
        pytest.approx(1.0))
    assert histogram.bucket_quantile(0.75, [(1.0, 4.0), (2.0, 3.0), (INF, 4.0)]) == (
        pytest.approx(0.75))


def test_bucket_deltas_and_a_restarted_server() -> None:
    prev = [(1.0, 2.0), (INF, 3.0)]
    assert histogram.delta([(1.0, 5.0), (INF, 7.0)], prev) == [(1.0, 3.0), (INF, 4.0)]
    assert histogram.delta([(1.0, 1.0), (INF, 1.0)], prev) == [(1.0, 1.0), (INF, 1.0)]


# -- a real /metrics capture (NGC vLLM 25.09) -------------------------------------------------

def test_the_real_capture_reads_as_its_numbers_say() -> None:
    s = serving.parse(body(CAPTURE), at=0.0)
    m = serving.summarize(s)
    assert (m.requests_running, m.requests_waiting) == (0.0, 0.0)
    assert m.kv_cache_usage == pytest.approx(0.0011764705882353343)
    assert s.counters["vllm:prompt_tokens"] == 246 and s.counters["vllm:generation_tokens"] == 1739
    assert m.models == ["Qwen/Qwen3-4B-Instruct-2507-FP8"]
    # TTFT buckets: 4 requests <= 0.04 s, 6 <= 0.06 s
    assert (m.ttft.count, m.ttft.p50, m.ttft.p95) == (6.0, pytest.approx(0.035), pytest.approx(0.057))
    # inter-token latency: this release still calls it time_per_output_token_seconds
    assert m.itl.metric == "vllm:time_per_output_token_seconds" and m.itl.count == 1733
    assert m.itl.p50 == pytest.approx(0.01 + 0.015 * 866.5 / 1731)
    assert m.prompt_tps is None and m.window == "since start"


def test_two_scrapes_give_throughput_and_interval_latencies() -> None:
    text = body(CAPTURE)
    before = serving.parse(text, at=100.0)
    later = text.replace('prompt_tokens_total{engine="0",model_name="Qwen/Qwen3-4B-Instruct-2507-FP8"}'
                         ' 246.0', 'prompt_tokens_total{engine="0",model_name="Qwen/Qwen3-4B-'
                         'Instruct-2507-FP8"} 846.0')
    later = later.replace('generation_tokens_total{engine="0",model_name="Qwen/Qwen3-4B-Instruct-'
                          '2507-FP8"} 1739.0', 'generation_tokens_total{engine="0",model_name='
                          '"Qwen/Qwen3-4B-Instruct-2507-FP8"} 1939.0')
    m = serving.summarize(serving.parse(later, at=104.0), before, before)
    assert m.interval_s == 4.0 and m.window == "last 4 s" and m.latency_window_s == 4.0
    assert m.prompt_tps == pytest.approx(150.0) and m.generation_tps == pytest.approx(50.0)
    assert m.ttft.count == 0 and m.ttft.p50 is None  # nothing new observed in the interval
    # rates over the interval, latencies since the server started: what one-shot status shows
    m = serving.summarize(serving.parse(later, at=104.0), before)
    assert m.prompt_tps == pytest.approx(150.0) and m.window == "since start"
    assert m.ttft.count == 6 and m.ttft.p50 == pytest.approx(0.035)
    restarted = serving.parse(text.replace("} 1739.0", "} 40.0"), at=110.0)
    assert serving.summarize(restarted, before).generation_tps == pytest.approx(40.0 / 10.0)


def test_engines_are_summed_and_kv_usage_averaged() -> None:
    text = (
        "# TYPE vllm:num_requests_running gauge\n"
        'vllm:num_requests_running{engine="0",model_name="m"} 2.0\n'
        'vllm:num_requests_running{engine="1",model_name="m"} 3.0\n'
        "# TYPE vllm:kv_cache_usage_perc gauge\n"
        'vllm:kv_cache_usage_perc{engine="0",model_name="m"} 0.2\n'
        'vllm:kv_cache_usage_perc{engine="1",model_name="m"} 0.4\n'
        "# TYPE vllm:inter_token_latency_seconds histogram\n"
        'vllm:inter_token_latency_seconds_bucket{engine="0",le="0.05",model_name="m"} 4.0\n'
        'vllm:inter_token_latency_seconds_bucket{engine="0",le="+Inf",model_name="m"} 4.0\n'
        'vllm:inter_token_latency_seconds_bucket{engine="1",le="0.05",model_name="m"} 0.0\n'
        'vllm:inter_token_latency_seconds_bucket{engine="1",le="+Inf",model_name="m"} 4.0\n')
    m = serving.summarize(serving.parse(text, at=0.0))
    assert m.requests_running == 5.0 and m.kv_cache_usage == pytest.approx(0.3)
    assert m.itl.metric == "vllm:inter_token_latency_seconds" and m.itl.count == 8.0
    assert m.itl.p50 == pytest.approx(0.05) and m.itl.p95 == pytest.approx(0.05)
    assert m.requests_waiting is None and m.ttft.p50 is None


@pytest.mark.parametrize("text", ["", "<html>502 Bad Gateway</html>",
                                  "# TYPE x counter\nx_total 1\n", "vllm:x{a=b} 1\n"])
def test_what_is_not_vllms_metrics_is_refused(text: str) -> None:
    with pytest.raises(serving.MetricsError):
        serving.parse(text, at=0.0)


def test_scrape_gets_metrics_through_the_getter() -> None:
    calls: list[str] = []

    def get(url: str, timeout: float) -> tuple[int, str]:
        calls.append(url)
        return 200, body(CAPTURE)

    s = servingmetrics.scrape("http://spark1:8000/", get, clock=lambda: 7.0)
    assert s.at == 7.0
    servingmetrics.scrape("http://spark1:8000/v1", get)  # the OpenAI base URL names the same
    assert calls == ["http://spark1:8000/metrics"] * 2
    with pytest.raises(serving.MetricsError, match="503"):
        servingmetrics.scrape("http://spark1:8000", lambda u, t: (503, ""))


def test_the_standins_output_reads_back_with_what_it_served() -> None:
    """The stand-in's /metrics text (vLLM 0.20.1's names, current ITL name) parsed as a
    real server's, after observations it recorded."""
    _, sched, metrics = modules()
    m = metrics.Metrics("m", 4096)
    req = sched.Request(prompt_tokens=100, max_tokens=3, arrival=0.0)
    req.scheduled, req.first_token, req.last_token = 0.0, 0.25, 0.5
    req.token_times, req.generated = [0.25, 0.375, 0.5], 3
    m.first_token(req)
    m.tokens(req, 3, None)
    m.finished(req, "length", 0.5, 3)
    m.scheduler_state(running=2, waiting=1, kv_cache_usage=0.25)
    s = serving.parse(m.render().decode(), at=0.0)
    summary = serving.summarize(s)
    assert (summary.requests_running, summary.requests_waiting, summary.kv_cache_usage) == (
        2.0, 1.0, 0.25)
    assert s.counters == {**s.counters, "vllm:prompt_tokens": 100.0,
                          "vllm:generation_tokens": 3.0}
    # TTFT 0.25 s: in the (0.1, 0.25] bucket, its middle by linear interpolation
    assert summary.ttft.count == 1 and summary.ttft.p50 == pytest.approx(0.175)
    assert summary.itl.metric == "vllm:inter_token_latency_seconds" and summary.itl.count == 2
    # both gaps are 0.125 s, in the (0.1, 0.15] bucket
    assert (summary.itl.p50, summary.itl.p95) == (pytest.approx(0.125), pytest.approx(0.1475))
