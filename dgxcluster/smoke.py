"""`dgxcluster smoke`: real chat completions against the endpoint, timed as users time them.

Each request streams (`stream: true`) so the time to the first token is measured where
the client sees it, and asks for `stream_options.include_usage` so token counts come
from the server's `usage`, not from counting chunks. Decode speed is
(completion tokens - 1) / (total - first token), the figure community benchmarks quote
(e.g. ~65 tok/s for Qwen3-30B-A3B-NVFP4 on one Spark); aggregate throughput is all
completion tokens over the wall time of the concurrent batch.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from dgxcluster.core import endpoint, httpclient
from dgxcluster.core.endpoint import EndpointProbe, Getter, base_url, probe

if TYPE_CHECKING:
    from dgxcluster.core.endpointroute import EndpointRoute
    from dgxcluster.inventory.load import Inventory
    from dgxcluster.secrets import Secret

DEFAULT_PROMPT = "In three sentences, explain what tensor parallelism is."
DEFAULT_MAX_TOKENS = 128
READ_TIMEOUT_S = 300.0


@dataclass
class RequestResult:
    index: int
    ok: bool = False
    error: str | None = None
    ttft_s: float | None = None
    total_s: float = 0.0
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    usage_reported: bool = False
    finish_reason: str | None = None
    text: str = ""

    @property
    def decode_tps(self) -> float | None:
        n = self.completion_tokens
        if not n or n < 2 or self.ttft_s is None or self.total_s <= self.ttft_s:
            return None
        return (n - 1) / (self.total_s - self.ttft_s)

    def to_json(self) -> dict[str, object]:
        out = dict(self.__dict__)
        out["decode_tokens_per_s"] = self.decode_tps
        return out


@dataclass
class SmokeReport:
    endpoint: EndpointProbe
    model: str | None = None
    requests: list[RequestResult] = field(default_factory=list)
    wall_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.endpoint.ready and bool(self.requests) and all(r.ok for r in self.requests)

    @property
    def failure(self) -> str | None:
        if not self.endpoint.ready:
            return self.endpoint.reason()
        bad = [r for r in self.requests if not r.ok]
        if bad:
            return f"{len(bad)} of {len(self.requests)} request(s) failed: {bad[0].error}"
        return None

    @property
    def completion_tokens(self) -> int:
        return sum(r.completion_tokens or 0 for r in self.requests if r.ok)

    @property
    def aggregate_tps(self) -> float | None:
        return self.completion_tokens / self.wall_s if self.wall_s > 0 else None

    def median(self, attr: str) -> float | None:
        values = [getattr(r, attr) for r in self.requests if r.ok]
        values = [v for v in values if v is not None]
        return statistics.median(values) if values else None

    def to_json(self) -> dict[str, object]:
        return {
            "ok": self.ok,
            "failure": self.failure,
            "endpoint": self.endpoint.to_json(),
            "model": self.model,
            "wall_s": round(self.wall_s, 4),
            "completion_tokens": self.completion_tokens,
            "aggregate_tokens_per_s": self.aggregate_tps,
            "median_ttft_s": self.median("ttft_s"),
            "median_total_s": self.median("total_s"),
            "median_decode_tokens_per_s": self.median("decode_tps"),
            "requests": [r.to_json() for r in self.requests],
        }


def run_smoke(
    inv: Inventory,
    *,
    prompt: str = DEFAULT_PROMPT,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    concurrency: int = 1,
    get: Getter | None = None,
    api_key: Secret | None = None,
    route: EndpointRoute | None = None,
) -> SmokeReport:
    """Check the endpoint (through `get`, else `route`), then send `concurrency` streaming
    chat completions at once, each on its own connection (by the path `route` found, direct
    or through the head's SSH connection); with `api_key`, every request carries it."""
    url = base_url(inv)
    state = probe(url, get or (route.get if route else endpoint.getter(api_key)))
    opener = route.opener() if route and get is None else None
    state.via = route.via if route and get is None else None
    report = SmokeReport(state)
    if not state.ready:
        return report
    wanted = inv.serve.served_model_name or inv.serve.model
    report.model = wanted if wanted in state.models else state.models[0]
    model = report.model
    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="smoke") as pool:
        futures = [pool.submit(chat, url, model, prompt, max_tokens, i + 1,
                               headers=endpoint.auth_headers(api_key), opener=opener)
                   for i in range(concurrency)]
        report.requests = [f.result() for f in futures]
    report.wall_s = time.perf_counter() - t0
    return report


def _read_stream(lines: Iterable[str], res: RequestResult, t0: float, pieces: list[str]) -> int:
    """Server-sent events of one completion into `res` and `pieces`; the number of chunks
    that carried text. Raises ValueError for an error event or bad JSON."""
    chunks = 0
    for line in lines:
        if not line.startswith("data:"):
            continue
        data = line[5:].strip()
        if data == "[DONE]":
            break
        event = json.loads(data)
        if "error" in event:
            raise ValueError(f"server error in stream: {event['error']}")
        for choice in event.get("choices") or []:
            delta = choice.get("delta") or {}
            text = delta.get("content") or delta.get("reasoning_content") or ""
            if text:
                if res.ttft_s is None:
                    res.ttft_s = time.perf_counter() - t0
                pieces.append(text)
                chunks += 1
            if choice.get("finish_reason"):
                res.finish_reason = choice["finish_reason"]
        usage = event.get("usage")
        if usage:
            res.usage_reported = True
            res.prompt_tokens = usage.get("prompt_tokens")
            res.completion_tokens = usage.get("completion_tokens")
    return chunks


def chat(url: str, model: str, prompt: str, max_tokens: int, index: int = 1,
         timeout: float = READ_TIMEOUT_S, headers: dict[str, str] | None = None,
         opener: httpclient.Opener | None = None) -> RequestResult:
    """One streaming chat completion, timed; never raises for HTTP or server trouble."""
    res = RequestResult(index)
    body = {
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    pieces: list[str] = []
    chunks = 0
    t0 = time.perf_counter()
    try:
        with httpclient.post_json(f"{url}/v1/chat/completions", body, timeout, headers,
                                  opener) as resp:
            if resp.status != 200:
                res.error = f"HTTP {resp.status}: {resp.text().strip()[:300]}"
                res.total_s = time.perf_counter() - t0
                return res
            chunks = _read_stream(resp.lines(), res, t0, pieces)
    except (OSError, ValueError, AttributeError, TypeError) as exc:
        res.error = f"{type(exc).__name__}: {exc}"[:300]
        res.total_s = time.perf_counter() - t0
        return res
    res.total_s = time.perf_counter() - t0
    res.text = "".join(pieces)
    if not res.usage_reported:
        res.completion_tokens = chunks  # best effort; flagged by usage_reported=False
    if res.ttft_s is None:
        res.error = "the stream ended without any token"
        return res
    res.ok = True
    return res
