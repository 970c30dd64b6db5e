"""The stand-in's scheduler: a server under load, without a model.

It paces every request the way a continuous-batching engine does, so that benchmarks and
`/metrics` see real queueing and real rates: at most `max_num_seqs` requests run at once and
their KV cache must fit (the rest wait, as `vllm:num_requests_waiting` shows), the prompt is
processed at a prefill rate, then tokens stream at a decode rate. Both rates are per request
and slow down as the batch grows: with n requests running, each gets `rate / (1 + s*(n-1))`.
The first token comes out of the prefill (TTFT = queue + prefill), as in vLLM.

Configured from the environment (the stand-in takes exactly vLLM's flags); see images/README.md:
  DGXCLUSTER_STANDIN_PREFILL_TPS      prompt tokens/s of one request alone (default 4000; 0 = instant)
  DGXCLUSTER_STANDIN_DECODE_TPS       generated tokens/s of one request alone (default 50; 0 = instant)
  DGXCLUSTER_STANDIN_BATCH_SLOWDOWN   s above (default 0.1)
  DGXCLUSTER_STANDIN_KV_CACHE_TOKENS  KV cache size in tokens (default 65536)
  DGXCLUSTER_STANDIN_TOKEN_S          older knob: seconds per generated token (1/decode rate)

Stand-in simplifications: a request reserves KV blocks for prompt + max_tokens when it is
admitted (vLLM grows blocks as it goes and preempts when they run out), and prefill is not
chunked against decode steps.
"""

from __future__ import annotations

import asyncio
import collections
import math
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field

#: vLLM's default --block-size on CUDA: the KV cache is counted in blocks of this many tokens.
BLOCK_SIZE = 16
#: Shortest sleep between two token emissions: above it, several tokens leave at once.
MIN_TICK_S = 0.002
#: Longest sleep of a prefill before the rate is read again (the batch may have changed).
MAX_TICK_S = 0.05
#: Float slack when comparing token progress with a whole token.
EPSILON = 1e-6

DEFAULTS = {
    "DGXCLUSTER_STANDIN_PREFILL_TPS": 4000.0,
    "DGXCLUSTER_STANDIN_DECODE_TPS": 50.0,
    "DGXCLUSTER_STANDIN_BATCH_SLOWDOWN": 0.1,
    "DGXCLUSTER_STANDIN_KV_CACHE_TOKENS": 65536.0,
}


class ConfigError(ValueError):
    """A DGXCLUSTER_STANDIN_* variable with a value the stand-in cannot use."""


def _number(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number >= 0, got {raw!r}") from None
    if not math.isfinite(value) or value < 0:
        raise ConfigError(f"{name} must be a number >= 0, got {raw!r}")
    return value


@dataclass(frozen=True)
class Rates:
    prefill_tps: float
    decode_tps: float
    slowdown: float
    kv_cache_tokens: int
    max_num_seqs: int

    @classmethod
    def from_env(cls, env: Mapping[str, str], max_num_seqs: int = 256) -> Rates:
        decode_default = DEFAULTS["DGXCLUSTER_STANDIN_DECODE_TPS"]
        token_s = _number(env, "DGXCLUSTER_STANDIN_TOKEN_S", 0.0)
        if token_s > 0:
            decode_default = 1.0 / token_s
        kv = _number(env, "DGXCLUSTER_STANDIN_KV_CACHE_TOKENS",
                     DEFAULTS["DGXCLUSTER_STANDIN_KV_CACHE_TOKENS"])
        if kv < BLOCK_SIZE:
            raise ConfigError(f"DGXCLUSTER_STANDIN_KV_CACHE_TOKENS must be at least {BLOCK_SIZE}")
        return cls(
            prefill_tps=_number(env, "DGXCLUSTER_STANDIN_PREFILL_TPS",
                                DEFAULTS["DGXCLUSTER_STANDIN_PREFILL_TPS"]),
            decode_tps=_number(env, "DGXCLUSTER_STANDIN_DECODE_TPS", decode_default),
            slowdown=_number(env, "DGXCLUSTER_STANDIN_BATCH_SLOWDOWN",
                             DEFAULTS["DGXCLUSTER_STANDIN_BATCH_SLOWDOWN"]),
            kv_cache_tokens=int(kv),
            max_num_seqs=max(1, max_num_seqs),
        )

    def per_request(self, rate: float, running: int) -> float:
        """A request's rate while `running` requests share the batch (0: no pacing)."""
        return rate / (1.0 + self.slowdown * (max(1, running) - 1))

    @property
    def total_blocks(self) -> int:
        return self.kv_cache_tokens // BLOCK_SIZE


def now() -> float:
    """The event loop's clock (monotonic; a test's loop may run it on virtual time)."""
    return asyncio.get_running_loop().time()


def blocks(tokens: int) -> int:
    return -(-max(0, tokens) // BLOCK_SIZE)


@dataclass(eq=False)
class Request:
    """One request's life, with the timestamps vLLM's request metrics are made of."""

    prompt_tokens: int
    max_tokens: int
    arrival: float = field(default_factory=now)
    scheduled: float | None = None
    first_token: float | None = None
    last_token: float | None = None
    generated: int = 0
    reserved_blocks: int = 0
    token_times: list[float] = field(default_factory=list)


class Scheduler:
    """Admits requests into the running batch and paces their prefill and decode."""

    def __init__(self, rates: Rates) -> None:
        self.rates = rates
        self.running: set[Request] = set()
        self._waiting: collections.deque[tuple[Request, asyncio.Future[None]]] = collections.deque()
        self._free_blocks = rates.total_blocks

    @property
    def num_waiting(self) -> int:
        return len(self._waiting)

    @property
    def kv_cache_usage(self) -> float:
        """Fraction of KV blocks holding tokens (prompt + generated) of running requests."""
        used = sum(blocks(r.prompt_tokens + r.generated) for r in self.running)
        return min(1.0, used / self.rates.total_blocks)

    def _fits(self, req: Request) -> bool:
        return (len(self.running) < self.rates.max_num_seqs
                and (self._free_blocks >= req.reserved_blocks or not self.running))

    def _admit(self, req: Request) -> None:
        req.scheduled = now()
        self._free_blocks -= req.reserved_blocks
        self.running.add(req)

    async def admit(self, req: Request) -> None:
        """Wait in line (FIFO) until the request fits in the batch and the KV cache."""
        req.reserved_blocks = min(blocks(req.prompt_tokens + req.max_tokens), self.rates.total_blocks)
        if not self._waiting and self._fits(req):
            self._admit(req)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append((req, fut))
        try:
            await fut
        except asyncio.CancelledError:
            if req in self.running:
                self.release(req)
            else:
                self._waiting = collections.deque(w for w in self._waiting if w[0] is not req)
            raise

    def release(self, req: Request) -> None:
        """The request left the batch (finished or aborted): let waiting ones in."""
        if req in self.running:
            self.running.discard(req)
            self._free_blocks += req.reserved_blocks
        while self._waiting and self._fits(self._waiting[0][0]):
            nxt, fut = self._waiting.popleft()
            if fut.done():
                continue
            self._admit(nxt)
            fut.set_result(None)

    async def prefill(self, req: Request) -> None:
        """Process the prompt at the per-request prefill rate; ends with the first token."""
        done = 0.0
        last = now()
        while done + EPSILON < req.prompt_tokens:
            rate = self.rates.per_request(self.rates.prefill_tps, len(self.running))
            if rate <= 0:
                break
            await asyncio.sleep(min(MAX_TICK_S, (req.prompt_tokens - done) / rate))
            t = now()
            done += (t - last) * rate
            last = t
        self._emit(req)

    async def decode(self, req: Request, count: int) -> AsyncIterator[int]:
        """Yield the index of each token as it is due; the first one came out of prefill."""
        if count <= 0:
            return
        if req.first_token is None:
            await self.prefill(req)
        yield 0
        emitted = 1
        done = 1.0
        last = req.first_token if req.first_token is not None else now()
        while emitted < count:
            rate = self.rates.per_request(self.rates.decode_tps, len(self.running))
            if rate > 0:
                await asyncio.sleep(max(MIN_TICK_S, (emitted + 1 - done) / rate))
                t = now()
                done += (t - last) * rate
                last = t
            else:
                done = float(count)
            while emitted < count and done + EPSILON >= emitted + 1:
                self._emit(req)
                yield emitted
                emitted += 1

    def _emit(self, req: Request) -> None:
        t = now()
        if req.first_token is None:
            req.first_token = t
        req.last_token = t
        req.generated += 1
        req.token_times.append(t)
