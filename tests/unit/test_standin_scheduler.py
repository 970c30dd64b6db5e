"""The vLLM stand-in's load model (images/testbed/standin/vllm_standin/scheduler.py), on a
virtual-time event loop: rates, batch slowdown, queueing and KV cache are asserted exactly,
without wall-clock time."""

from __future__ import annotations

import asyncio

import pytest

from tests.standin import modules, run_virtual

_, sched, _ = modules()


def rates(**env: str) -> object:
    return sched.Rates.from_env(env)


def test_defaults_and_the_older_token_s_knob() -> None:
    r = sched.Rates.from_env({})
    assert (r.prefill_tps, r.decode_tps, r.slowdown, r.kv_cache_tokens, r.max_num_seqs) == (
        4000.0, 50.0, 0.1, 65536, 256)
    assert sched.Rates.from_env({"DGXCLUSTER_STANDIN_TOKEN_S": "0.05"}).decode_tps == 20.0
    both = {"DGXCLUSTER_STANDIN_TOKEN_S": "0.05", "DGXCLUSTER_STANDIN_DECODE_TPS": "80"}
    assert sched.Rates.from_env(both).decode_tps == 80.0
    assert sched.Rates.from_env({}, max_num_seqs=8).max_num_seqs == 8


@pytest.mark.parametrize("name,value", [
    ("DGXCLUSTER_STANDIN_DECODE_TPS", "fast"), ("DGXCLUSTER_STANDIN_PREFILL_TPS", "-1"),
    ("DGXCLUSTER_STANDIN_BATCH_SLOWDOWN", "nan"), ("DGXCLUSTER_STANDIN_KV_CACHE_TOKENS", "8"),
    ("DGXCLUSTER_STANDIN_TOKEN_S", "inf")])
def test_a_bad_value_names_the_variable(name: str, value: str) -> None:
    with pytest.raises(sched.ConfigError, match=name):
        sched.Rates.from_env({name: value})


def test_per_request_rate_slows_down_with_the_batch() -> None:
    r = sched.Rates.from_env({"DGXCLUSTER_STANDIN_BATCH_SLOWDOWN": "0.25"})
    assert r.per_request(100.0, 1) == 100.0
    assert r.per_request(100.0, 5) == 50.0
    assert r.per_request(100.0, 0) == 100.0


def _serve(s: object, prompt: int, tokens: int, out: dict[str, object]) -> object:
    async def one() -> None:
        req = sched.Request(prompt_tokens=prompt, max_tokens=tokens)
        await s.admit(req)  # type: ignore[attr-defined]
        try:
            async for _ in s.decode(req, tokens):  # type: ignore[attr-defined]
                pass
        finally:
            s.release(req)  # type: ignore[attr-defined]
        out[str(len(out))] = req
    return one()


def test_one_request_alone_gets_the_configured_rates_exactly() -> None:
    env = {"DGXCLUSTER_STANDIN_PREFILL_TPS": "1000", "DGXCLUSTER_STANDIN_DECODE_TPS": "20"}
    done: dict[str, object] = {}

    async def main() -> None:
        s = sched.Scheduler(sched.Rates.from_env(env))
        await _serve(s, 500, 41, done)

    run_virtual(main())
    req = done["0"]
    assert req.first_token - req.scheduled == pytest.approx(0.5)  # type: ignore[attr-defined]
    gaps = [b - a for a, b in zip(req.token_times, req.token_times[1:], strict=False)]  # type: ignore[attr-defined]
    assert len(gaps) == 40 and all(g == pytest.approx(0.05) for g in gaps)
    assert req.generated == 41  # type: ignore[attr-defined]


def test_concurrent_requests_share_the_slowdown() -> None:
    env = {"DGXCLUSTER_STANDIN_PREFILL_TPS": "0", "DGXCLUSTER_STANDIN_DECODE_TPS": "10",
           "DGXCLUSTER_STANDIN_BATCH_SLOWDOWN": "0.5"}
    reqs = []

    async def main() -> None:
        s = sched.Scheduler(sched.Rates.from_env(env))
        reqs.extend(sched.Request(prompt_tokens=10, max_tokens=11) for _ in range(3))
        for r in reqs:
            await s.admit(r)

        async def decode(r: object) -> None:
            async for _ in s.decode(r, 11):
                pass

        await asyncio.gather(*(decode(r) for r in reqs))

    run_virtual(main())
    for req in reqs:  # 3 running: 10 / (1 + 0.5 * 2) = 5 tokens/s each
        assert req.last_token - req.first_token == pytest.approx(10 / 5.0)
        assert req.generated == 11


def test_requests_beyond_max_num_seqs_wait_in_order() -> None:
    env = {"DGXCLUSTER_STANDIN_PREFILL_TPS": "0", "DGXCLUSTER_STANDIN_DECODE_TPS": "10"}
    seen: list[tuple[int, int]] = []

    async def main() -> None:
        s = sched.Scheduler(sched.Rates.from_env(env, max_num_seqs=2))
        reqs = [sched.Request(prompt_tokens=4, max_tokens=4) for _ in range(3)]
        tasks = [asyncio.ensure_future(s.admit(r)) for r in reqs]
        await asyncio.sleep(0)
        seen.append((len(s.running), s.num_waiting))
        assert tasks[0].done() and tasks[1].done() and not tasks[2].done()
        s.release(reqs[1])
        await asyncio.sleep(0)
        seen.append((len(s.running), s.num_waiting))
        assert tasks[2].done() and reqs[2] in s.running

    run_virtual(main())
    assert seen == [(2, 1), (2, 0)]


def test_the_kv_cache_holds_back_what_does_not_fit_and_its_usage_moves() -> None:
    env = {"DGXCLUSTER_STANDIN_KV_CACHE_TOKENS": "160"}  # 10 blocks of 16
    states: list[tuple[int, int, float]] = []

    async def main() -> None:
        s = sched.Scheduler(sched.Rates.from_env(env))
        a = sched.Request(prompt_tokens=64, max_tokens=32)  # 6 blocks reserved
        b = sched.Request(prompt_tokens=64, max_tokens=32)
        await s.admit(a)
        states.append((len(s.running), s.num_waiting, s.kv_cache_usage))  # 64 tokens: 4 blocks
        waiting = asyncio.ensure_future(s.admit(b))
        await asyncio.sleep(0)
        states.append((len(s.running), s.num_waiting, s.kv_cache_usage))
        a.generated = 17  # 81 tokens: 6 blocks
        states.append((len(s.running), s.num_waiting, s.kv_cache_usage))
        s.release(a)
        await waiting
        states.append((len(s.running), s.num_waiting, s.kv_cache_usage))

    run_virtual(main())
    assert states == [(1, 0, 0.4), (1, 1, 0.4), (1, 1, 0.6), (1, 0, 0.4)]


def test_a_request_larger_than_the_cache_runs_alone() -> None:
    env = {"DGXCLUSTER_STANDIN_KV_CACHE_TOKENS": "32"}
    ran: list[int] = []

    async def main() -> None:
        s = sched.Scheduler(sched.Rates.from_env(env))
        big = sched.Request(prompt_tokens=1000, max_tokens=10)
        await asyncio.wait_for(s.admit(big), 1)
        ran.append(len(s.running))

    run_virtual(main())
    assert ran == [1]


def test_a_cancelled_waiter_leaves_the_queue() -> None:
    async def main() -> None:
        s = sched.Scheduler(sched.Rates.from_env({}, max_num_seqs=1))
        first = sched.Request(prompt_tokens=1, max_tokens=1)
        await s.admit(first)
        second = asyncio.ensure_future(s.admit(sched.Request(prompt_tokens=1, max_tokens=1)))
        await asyncio.sleep(0)
        assert s.num_waiting == 1
        second.cancel()
        await asyncio.sleep(0)
        assert s.num_waiting == 0
        s.release(first)
        assert not s.running

    run_virtual(main())
