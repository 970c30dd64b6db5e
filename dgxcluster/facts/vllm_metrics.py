"""vLLM's `/metrics` (Prometheus text, served by rank 0's API server), read into what an
operator watches: requests running and waiting, KV-cache usage, prompt and generation
throughput over the last interval, and TTFT and inter-token latency p50/p95.

The text is parsed with prometheus_client's own parser (the library vLLM exports with).
Names are vLLM's (vllm/v1/metrics/loggers.py, PrometheusStatLogger, 0.20.1); the names older
releases used are read when the current ones are missing (`gpu_cache_usage_perc` before
0.10, `time_per_output_token_seconds` for inter-token latency before 0.11). Series of several
engines (data parallelism) are summed; KV-cache usage is their mean.

Throughput needs two scrapes: counter deltas over the time between them, as Prometheus'
rate() does (a counter that went down means vLLM restarted; the new value is the delta). The
latency quantiles come from the histogram buckets observed since a chosen earlier scrape
(what histogram_quantile over rate() gives), or since the server started without one.
Fetching the text is the caller's (`core.servingmetrics`); everything here is pure.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from dgxcluster.facts import histogram

#: Where vLLM's API server serves the text (no API key: its middleware guards /v1 only).
PATH = "/metrics"
RUNNING = "vllm:num_requests_running"
WAITING = "vllm:num_requests_waiting"
KV_CACHE = ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc")
PROMPT_TOKENS = "vllm:prompt_tokens"
GENERATION_TOKENS = "vllm:generation_tokens"
TTFT = ("vllm:time_to_first_token_seconds",)
ITL = ("vllm:inter_token_latency_seconds", "vllm:time_per_output_token_seconds")
QUANTILES = (0.5, 0.95)
SINCE_START = "since start"


class MetricsError(ValueError):
    """The text is not Prometheus exposition format, or has none of vLLM's metrics."""


@dataclass
class Scrape:
    """One reading of /metrics, reduced to the series the summary needs; `at` is when it
    was read (seconds on the reader's monotonic clock)."""

    at: float
    gauges: dict[str, list[float]] = field(default_factory=dict)
    counters: dict[str, float] = field(default_factory=dict)
    histograms: dict[str, dict[float, float]] = field(default_factory=dict)
    models: list[str] = field(default_factory=list)

    def gauge(self, *names: str, mean: bool = False) -> float | None:
        for name in names:
            values = self.gauges.get(name)
            if values:
                return sum(values) / len(values) if mean else sum(values)
        return None

    def buckets(self, names: tuple[str, ...]) -> tuple[str, dict[float, float]] | None:
        for name in names:
            if name in self.histograms:
                return name, self.histograms[name]
        return None


def parse(text: str, at: float) -> Scrape:
    """Read the exposition text; everything outside the `vllm:` namespace is ignored."""
    from prometheus_client.parser import text_string_to_metric_families

    out = Scrape(at=at)
    models: dict[str, None] = {}
    try:
        for family in text_string_to_metric_families(text):
            if not family.name.startswith("vllm:"):
                continue
            for s in family.samples:
                if "model_name" in s.labels:
                    models.setdefault(s.labels["model_name"], None)
                if family.type == "gauge" and s.name == family.name:
                    out.gauges.setdefault(family.name, []).append(s.value)
                elif family.type == "counter" and s.name == family.name + "_total":
                    out.counters[family.name] = out.counters.get(family.name, 0.0) + s.value
                elif family.type == "histogram" and s.name == family.name + "_bucket":
                    le = float(s.labels["le"])
                    h = out.histograms.setdefault(family.name, {})
                    h[le] = h.get(le, 0.0) + s.value
    except (ValueError, KeyError, IndexError) as exc:
        raise MetricsError(f"not Prometheus text: {exc}") from None
    if not (out.gauges or out.counters or out.histograms):
        raise MetricsError("no vllm:* metrics in the text (is this vLLM's /metrics?)")
    out.models = list(models)
    return out


@dataclass(frozen=True)
class Latency:
    """Quantiles in seconds, or None where no request was observed in the window."""

    p50: float | None
    p95: float | None
    count: float
    metric: str | None

    def to_json(self) -> dict[str, object]:
        return {"p50_s": self.p50, "p95_s": self.p95, "observations": self.count,
                "metric": self.metric}


@dataclass(frozen=True)
class ServingMetrics:
    requests_running: float | None
    requests_waiting: float | None
    kv_cache_usage: float | None  # 0..1
    prompt_tps: float | None
    generation_tps: float | None
    interval_s: float | None  # what the throughput is measured over (None: one scrape)
    ttft: Latency
    itl: Latency
    latency_window_s: float | None  # what the quantiles cover; None: since the server started
    models: list[str]

    @property
    def window(self) -> str:
        """The latency window in words: `since start` or `last 30 s`."""
        if self.latency_window_s is None:
            return SINCE_START
        return f"last {self.latency_window_s:.0f} s"

    def to_json(self) -> dict[str, object]:
        return {"requests_running": self.requests_running,
                "requests_waiting": self.requests_waiting,
                "kv_cache_usage": self.kv_cache_usage,
                "prompt_tokens_per_s": self.prompt_tps,
                "generation_tokens_per_s": self.generation_tps,
                "interval_s": self.interval_s, "ttft": self.ttft.to_json(),
                "itl": self.itl.to_json(), "latency_window": self.window,
                "latency_window_s": self.latency_window_s, "models": self.models}


def _rate(name: str, cur: Scrape, prev: Scrape | None) -> float | None:
    if prev is None or name not in cur.counters or name not in prev.counters:
        return None
    dt = cur.at - prev.at
    if dt <= 0:
        return None
    diff = cur.counters[name] - prev.counters[name]
    return (diff if diff >= 0 else cur.counters[name]) / dt


def _latency(names: tuple[str, ...], cur: Scrape, since: Scrape | None) -> Latency:
    found = cur.buckets(names)
    if found is None:
        return Latency(None, None, 0.0, None)
    name, buckets = found
    data = sorted(buckets.items())
    if since is not None and name in since.histograms:
        data = histogram.delta(buckets.items(), since.histograms[name].items())
    count = max((n for le, n in data if math.isinf(le)), default=0.0)
    qs = [histogram.bucket_quantile(q, data) for q in QUANTILES]
    p50, p95 = (None if math.isnan(v) else v for v in qs)
    return Latency(p50, p95, count, name)


def summarize(current: Scrape, previous: Scrape | None = None,
              latency_since: Scrape | None = None) -> ServingMetrics:
    """The summary at `current`: throughput since `previous`, latency quantiles over what was
    observed since `latency_since` (since the server started when it is None)."""
    since = latency_since if latency_since is not None and latency_since.at < current.at else None
    return ServingMetrics(
        requests_running=current.gauge(RUNNING),
        requests_waiting=current.gauge(WAITING),
        kv_cache_usage=current.gauge(*KV_CACHE, mean=True),
        prompt_tps=_rate(PROMPT_TOKENS, current, previous),
        generation_tps=_rate(GENERATION_TOKENS, current, previous),
        interval_s=(current.at - previous.at) if previous is not None else None,
        ttft=_latency(TTFT, current, since),
        itl=_latency(ITL, current, since),
        latency_window_s=(current.at - since.at) if since is not None else None,
        models=current.models,
    )
