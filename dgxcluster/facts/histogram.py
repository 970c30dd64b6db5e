"""Prometheus' arithmetic on classic histograms (used by `vllm_metrics`): quantiles from
cumulative buckets as histogram_quantile() computes them (promql/quantile.go,
bucketQuantile): buckets sorted by upper bound, the +Inf bucket required, counts forced
monotonic, linear interpolation inside the bucket holding the rank, 0 as the lower bound of
the first bucket, and the highest finite bound when the rank falls into the +Inf bucket.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

#: (upper bound, cumulative count), as in a `_bucket{le="..."}` series.
Bucket = tuple[float, float]


def bucket_quantile(q: float, buckets: Iterable[Bucket]) -> float:
    """The q-quantile (0..1) of the observations; NaN when there is none or no +Inf bucket."""
    if math.isnan(q):
        return math.nan
    if q < 0:
        return -math.inf
    if q > 1:
        return math.inf
    merged: dict[float, float] = {}
    for upper, count in buckets:
        merged[upper] = merged.get(upper, 0.0) + count
    bs = sorted(merged.items())
    if len(bs) < 2 or not math.isinf(bs[-1][0]):
        return math.nan
    highest = 0.0
    for i, (upper, count) in enumerate(bs):
        highest = max(highest, count)
        bs[i] = (upper, highest)
    observations = bs[-1][1]
    if observations == 0:
        return math.nan
    rank = q * observations
    b = next((i for i in range(len(bs) - 1) if bs[i][1] >= rank), len(bs) - 1)
    if b == len(bs) - 1:
        return bs[-2][0]
    if b == 0 and bs[0][0] <= 0:
        return bs[0][0]
    start, end, count = 0.0, bs[b][0], bs[b][1]
    if b > 0:
        start = bs[b - 1][0]
        count -= bs[b - 1][1]
        rank -= bs[b - 1][1]
    return start + (end - start) * (rank / count)


def delta(current: Iterable[Bucket], previous: Iterable[Bucket]) -> list[Bucket]:
    """The observations made between two scrapes (what rate() over the interval feeds
    histogram_quantile). A count that went down means the server restarted: then the current
    buckets are all there is, as Prometheus treats a counter reset."""
    cur = dict(current)
    prev = dict(previous)
    if any(cur.get(le, 0.0) < n for le, n in prev.items()):
        return sorted(cur.items())
    return sorted((le, n - prev.get(le, 0.0)) for le, n in cur.items())
