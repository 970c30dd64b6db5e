"""The stand-in's `/metrics`: vLLM's Prometheus metrics, updated by the requests it serves.

Names, types, help texts, labels (`model_name`, `engine`; `finished_reason` on
request_success) and histogram buckets are those of vLLM 0.20.1's PrometheusStatLogger
(`vllm/v1/metrics/loggers.py`), rendered by the same library vLLM uses (prometheus_client),
so a scraper sees the text a real server gives. Metrics of features the stand-in has no
equivalent for (speculative decoding, LoRA, KV connectors, multimodal caches) are left out.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from vllm_standin.scheduler import Request

LABELS = ["model_name", "engine"]
#: vLLM's FinishReason strings (vllm/v1/engine/__init__.py), each a request_success series.
FINISH_REASONS = ("stop", "length", "abort", "error", "repetition")
CONTENT_TYPE = CONTENT_TYPE_LATEST

TTFT_BUCKETS = [0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5,
                5.0, 7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0]
ITL_BUCKETS = [0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0,
               7.5, 10.0, 20.0, 40.0, 80.0]
REQUEST_LATENCY_BUCKETS = [0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0,
                           50.0, 60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0]


def build_1_2_5_buckets(max_value: int) -> list[int]:
    """vLLM's token-count buckets: 1, 2, 5, 10, 20, 50, ... up to max_value."""
    out: list[int] = []
    exponent = 0
    while True:
        for m in (1, 2, 5):
            value = m * 10**exponent
            if value > max_value:
                return out
            out.append(value)
        exponent += 1


class Metrics:
    def __init__(self, model_name: str, max_model_len: int, engine: str = "0",
                 shared: Metrics | None = None) -> None:
        """One engine's series; `shared`: another engine's Metrics, whose families (and
        registry) this one's series join, as vLLM's per-engine `engine="N"` series do."""
        self.registry = shared.registry if shared is not None else CollectorRegistry()
        self._families: dict[str, Any] = shared._families if shared is not None else {}
        if shared is None:
            ProcessCollector(registry=self.registry)
            PlatformCollector(registry=self.registry)
            GCCollector(registry=self.registry)
        values = (model_name, engine)
        tokens = build_1_2_5_buckets(max_model_len)

        def family(cls: Any, name: str, doc: str, labels: list[str] = LABELS, **kw: Any) -> Any:
            if name not in self._families:
                self._families[name] = cls(name, doc, labels, registry=self.registry, **kw)
            return self._families[name]

        def gauge(name: str, doc: str) -> Gauge:
            return family(Gauge, name, doc, multiprocess_mode="mostrecent").labels(*values)

        def counter(name: str, doc: str) -> Counter:
            return family(Counter, name, doc).labels(*values)

        def histogram(name: str, doc: str, buckets: list[float] | list[int]) -> Histogram:
            return family(Histogram, name, doc, buckets=buckets).labels(*values)

        self.running = gauge("vllm:num_requests_running",
                             "Number of requests in model execution batches.")
        self.waiting = gauge("vllm:num_requests_waiting",
                             "Number of requests waiting to be processed.")
        self.kv_cache_usage = gauge("vllm:kv_cache_usage_perc",
                                    "KV-cache usage. 1 means 100 percent usage.")
        self.prefix_queries = counter("vllm:prefix_cache_queries",
                                      "Prefix cache queries, in terms of number of queried tokens.")
        self.prefix_hits = counter("vllm:prefix_cache_hits",
                                   "Prefix cache hits, in terms of number of cached tokens.")
        self.preemptions = counter("vllm:num_preemptions",
                                   "Cumulative number of preemption from the engine.")
        self.prompt_tokens = counter("vllm:prompt_tokens", "Number of prefill tokens processed.")
        self.generation_tokens = counter("vllm:generation_tokens",
                                         "Number of generation tokens processed.")
        success = family(Counter, "vllm:request_success",
                         "Count of successfully processed requests.", LABELS + ["finished_reason"])
        self.success = {reason: success.labels(*values, reason) for reason in FINISH_REASONS}
        self.request_prompt_tokens = histogram(
            "vllm:request_prompt_tokens", "Number of prefill tokens processed.", tokens)
        self.request_generation_tokens = histogram(
            "vllm:request_generation_tokens", "Number of generation tokens processed.", tokens)
        self.max_num_generation_tokens = histogram(
            "vllm:request_max_num_generation_tokens",
            "Histogram of maximum number of requested generation tokens.", tokens)
        self.params_n = histogram("vllm:request_params_n",
                                  "Histogram of the n request parameter.", [1, 2, 5, 10, 20])
        self.params_max_tokens = histogram(
            "vllm:request_params_max_tokens", "Histogram of the max_tokens request parameter.", tokens)
        self.ttft = histogram("vllm:time_to_first_token_seconds",
                              "Histogram of time to first token in seconds.", TTFT_BUCKETS)
        self.itl = histogram("vllm:inter_token_latency_seconds",
                             "Histogram of inter-token latency in seconds.", ITL_BUCKETS)
        self.tpot = histogram("vllm:request_time_per_output_token_seconds",
                              "Histogram of time_per_output_token_seconds per request.", ITL_BUCKETS)
        self.e2e = histogram("vllm:e2e_request_latency_seconds",
                             "Histogram of e2e request latency in seconds.", REQUEST_LATENCY_BUCKETS)
        self.queue_time = histogram("vllm:request_queue_time_seconds",
                                    "Histogram of time spent in WAITING phase for request.",
                                    REQUEST_LATENCY_BUCKETS)
        self.inference_time = histogram("vllm:request_inference_time_seconds",
                                        "Histogram of time spent in RUNNING phase for request.",
                                        REQUEST_LATENCY_BUCKETS)
        self.prefill_time = histogram("vllm:request_prefill_time_seconds",
                                      "Histogram of time spent in PREFILL phase for request.",
                                      REQUEST_LATENCY_BUCKETS)
        self.decode_time = histogram("vllm:request_decode_time_seconds",
                                     "Histogram of time spent in DECODE phase for request.",
                                     REQUEST_LATENCY_BUCKETS)

    def scheduler_state(self, running: int, waiting: int, kv_cache_usage: float) -> None:
        """What vLLM's scheduler reports every step; set just before each scrape."""
        self.running.set(running)
        self.waiting.set(waiting)
        self.kv_cache_usage.set(kv_cache_usage)

    def first_token(self, req: Request) -> None:
        """The prompt was processed: counted as vLLM counts it, at the step that did it."""
        assert req.first_token is not None
        self.prompt_tokens.inc(req.prompt_tokens)
        self.prefix_queries.inc(req.prompt_tokens)
        self.ttft.observe(req.first_token - req.arrival)

    def tokens(self, req: Request, count: int, since: float | None) -> None:
        """`count` new tokens at req.token_times[-count:], the previous one at `since`."""
        self.generation_tokens.inc(count)
        times = req.token_times[-count:]
        prev = since
        for t in times:
            if prev is not None:
                self.itl.observe(t - prev)
            prev = t

    def finished(self, req: Request, reason: str, now: float, max_tokens: int) -> None:
        self.success[reason].inc()
        self.e2e.observe(now - req.arrival)
        scheduled = req.scheduled if req.scheduled is not None else now
        self.queue_time.observe(scheduled - req.arrival)
        first = req.first_token if req.first_token is not None else now
        last = req.last_token if req.last_token is not None else now
        self.prefill_time.observe(first - scheduled)
        self.decode_time.observe(last - first)
        self.inference_time.observe(last - scheduled)
        self.request_prompt_tokens.observe(req.prompt_tokens)
        self.request_generation_tokens.observe(req.generated)
        self.max_num_generation_tokens.observe(max_tokens)
        self.params_n.observe(1)
        self.params_max_tokens.observe(max_tokens)
        if req.generated > 1:
            self.tpot.observe((last - first) / (req.generated - 1))

    def render(self) -> bytes:
        return generate_latest(self.registry)
