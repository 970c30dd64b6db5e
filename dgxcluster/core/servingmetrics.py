"""Rank 0's `/metrics`, read from the operator's machine: one scrape (`scrape`), or a
`Reader` that scrapes the same server again and again and keeps what the rates need.

What the numbers mean is `facts.vllm_metrics`'s (pure); this module only fetches, over the
one HTTP stack (`core.httpclient`), at the server root `core.endpoint.base_url` gives.
`status` and `status --watch` use it, `bench` and `metrics` may.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

from dgxcluster.core import httpclient
from dgxcluster.core.endpoint import Getter
from dgxcluster.facts import vllm_metrics
from dgxcluster.facts.vllm_metrics import MetricsError, Scrape, ServingMetrics

__all__ = ["LATENCY_WINDOW_S", "MetricsError", "Reader", "metrics_url", "scrape"]

#: How far back `Reader` takes latency quantiles from (Prometheus dashboards' usual window).
LATENCY_WINDOW_S = 60.0


def metrics_url(url: str) -> str:
    """`<server root>/metrics` (url: `core.endpoint.base_url`'s form, or the /v1 one)."""
    root = url.rstrip("/")
    root = root[: -len("/v1")] if root.endswith("/v1") else root
    return f"{root}{vllm_metrics.PATH}"


def scrape(url: str, get: Getter = httpclient.get, timeout: float = 5.0,
           clock: Callable[[], float] = time.monotonic) -> Scrape:
    """GET `<url>/metrics` once. Raises OSError (network) or MetricsError (not vLLM's
    metrics, or an HTTP status other than 200)."""
    status, body = get(metrics_url(url), timeout)
    at = clock()
    if status != 200:
        raise MetricsError(f"GET /metrics returned {status}")
    return vllm_metrics.parse(body, at)


class Reader:
    """Scrapes one server repeatedly over one kept-alive connection. Each `read` is one
    HTTP request. Throughput is measured since the previous read; latency quantiles over
    what was observed since the oldest scrape of the last `window_s` seconds (the whole
    watch until it is that long), or since the server started when `window_s` is None or
    before a second scrape. A failed read keeps the history: the next success measures
    from the last good scrape."""

    def __init__(self, url: str, *, get: Getter | None = None, timeout: float = 5.0,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep,
                 window_s: float | None = LATENCY_WINDOW_S) -> None:
        self.url = url
        self._client = httpclient.KeepAlive() if get is None else None
        self._get: Getter = get if get is not None else self._client.get  # type: ignore[union-attr]
        self._timeout = timeout
        self._clock = clock
        self._sleep = sleep
        self._window = window_s
        self._history: deque[Scrape] = deque()

    @property
    def last(self) -> Scrape | None:
        return self._history[-1] if self._history else None

    def read(self, min_interval: float = 0.0) -> ServingMetrics:
        """Scrape now (or once `min_interval` seconds have passed since the previous
        scrape, so that a rate is not taken over a few milliseconds) and summarize."""
        prev = self.last
        if prev is not None and min_interval > 0:
            wait = prev.at + min_interval - self._clock()
            if wait > 0:
                self._sleep(wait)
        cur = scrape(self.url, self._get, self._timeout, self._clock)
        since = None
        if self._window is not None:
            while len(self._history) > 1 and cur.at - self._history[1].at >= self._window:
                self._history.popleft()
            since = self._history[0] if self._history else None
        self._history.append(cur)
        if self._window is None:
            while len(self._history) > 1:
                self._history.popleft()
        return vllm_metrics.summarize(cur, prev, since)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
