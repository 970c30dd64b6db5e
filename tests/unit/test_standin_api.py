"""The vLLM stand-in's HTTP API in-process (aiohttp's test server, real event loop): the
streaming shapes vLLM 0.20.1 gives, API keys, and `/metrics` with vLLM's metric names,
types, labels and buckets, moved by the requests it serves."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from tests.standin import make_api, modules

api_mod, sched, _ = modules()
FAST = {"DGXCLUSTER_STANDIN_PREFILL_TPS": "0", "DGXCLUSTER_STANDIN_DECODE_TPS": "0"}

#: vLLM 0.20.1, vllm/v1/metrics/loggers.py (PrometheusStatLogger): name -> (type, buckets)
#: for what the stand-in exports. Copied from the source, not from the stand-in.
TTFT = [0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5,
        10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0]
ITL = [0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
       20.0, 40.0, 80.0]
LATENCY = [0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0,
           120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0]
TOKENS_4096 = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000]  # build_1_2_5_buckets(4096)
VLLM_0_20_1 = {
    "vllm:num_requests_running": ("gauge", None), "vllm:num_requests_waiting": ("gauge", None),
    "vllm:kv_cache_usage_perc": ("gauge", None), "vllm:prefix_cache_queries": ("counter", None),
    "vllm:prefix_cache_hits": ("counter", None), "vllm:num_preemptions": ("counter", None),
    "vllm:prompt_tokens": ("counter", None), "vllm:generation_tokens": ("counter", None),
    "vllm:request_success": ("counter", None),
    "vllm:request_prompt_tokens": ("histogram", TOKENS_4096),
    "vllm:request_generation_tokens": ("histogram", TOKENS_4096),
    "vllm:request_max_num_generation_tokens": ("histogram", TOKENS_4096),
    "vllm:request_params_n": ("histogram", [1, 2, 5, 10, 20]),
    "vllm:request_params_max_tokens": ("histogram", TOKENS_4096),
    "vllm:time_to_first_token_seconds": ("histogram", TTFT),
    "vllm:inter_token_latency_seconds": ("histogram", ITL),
    "vllm:request_time_per_output_token_seconds": ("histogram", ITL),
    "vllm:e2e_request_latency_seconds": ("histogram", LATENCY),
    "vllm:request_queue_time_seconds": ("histogram", LATENCY),
    "vllm:request_inference_time_seconds": ("histogram", LATENCY),
    "vllm:request_prefill_time_seconds": ("histogram", LATENCY),
    "vllm:request_decode_time_seconds": ("histogram", LATENCY),
}


def serve(test: Callable[[TestClient, Any], Awaitable[None]], **kwargs: Any) -> None:
    async def main() -> None:
        api = make_api(**kwargs)
        async with TestClient(TestServer(api_mod.build_app(api))) as client:
            await test(client, api)
    asyncio.run(main())


async def events(resp: Any) -> list[Any]:
    out = []
    async for raw in resp.content:
        line = raw.decode().strip()
        if line.startswith("data: "):
            out.append("[DONE]" if line == "data: [DONE]" else json.loads(line[6:]))
    return out


async def metrics(client: TestClient) -> dict[str, Any]:
    resp = await client.get("/metrics")
    assert resp.status == 200
    return {f.name: f for f in text_string_to_metric_families(await resp.text())}


def value(families: dict[str, Any], name: str, sample: str | None = None, **labels: str) -> float:
    for s in families[name].samples:
        if s.name == (sample or name) and all(s.labels.get(k) == v for k, v in labels.items()):
            return float(s.value)
    raise AssertionError(f"no sample {sample or name} {labels}")


def test_a_chat_stream_has_vllms_shape(monkeypatch: pytest.MonkeyPatch) -> None:
    for k, v in FAST.items():
        monkeypatch.setenv(k, v)

    async def check(client: TestClient, _api: Any) -> None:
        resp = await client.post("/v1/chat/completions", json={
            "messages": [{"role": "user", "content": "one two three"}], "max_tokens": 5,
            "stream": True, "stream_options": {"include_usage": True}, "return_token_ids": True})
        assert resp.status == 200 and resp.headers["Content-Type"] == "text/event-stream"
        ev = await events(resp)
        assert ev[-1] == "[DONE]"
        first, tokens, usage = ev[0], ev[1:-2], ev[-2]
        assert first["choices"][0]["delta"] == {"content": "", "role": "assistant"}
        assert len(first["prompt_token_ids"]) == 3 + 3  # the words, then the chat template's
        assert [len(c["choices"][0]["token_ids"]) for c in tokens] == [1] * 5
        assert [c["choices"][0]["finish_reason"] for c in tokens] == [None] * 4 + ["length"]
        assert usage["choices"] == [] and usage["usage"]["completion_tokens"] == 5
        assert usage["usage"]["prompt_tokens"] == 6
    serve(check)


def test_min_tokens_and_ignore_eos_generate_up_to_max_tokens(monkeypatch: pytest.MonkeyPatch) -> None:
    for k, v in FAST.items():
        monkeypatch.setenv(k, v)

    async def check(client: TestClient, _api: Any) -> None:
        msg = [{"role": "user", "content": "hi"}]
        short = await (await client.post("/v1/chat/completions",
                                          json={"messages": msg, "max_tokens": 200})).json()
        assert short["choices"][0]["finish_reason"] == "stop"
        assert short["usage"]["completion_tokens"] < 200
        for extra in ({"ignore_eos": True}, {"min_tokens": 200}):
            body = await (await client.post("/v1/chat/completions", json={
                "messages": msg, "max_tokens": 200, **extra})).json()
            assert body["usage"]["completion_tokens"] == 200
            assert body["choices"][0]["finish_reason"] == "length"
    serve(check)


def test_too_long_a_request_is_refused_as_vllm_refuses_it(monkeypatch: pytest.MonkeyPatch) -> None:
    async def check(client: TestClient, _api: Any) -> None:
        resp = await client.post("/v1/completions", json={"prompt": "w " * 100, "max_tokens": 30})
        assert resp.status == 400
        assert "maximum context length is 128 tokens" in (await resp.json())["error"]["message"]
        bad = await client.post("/v1/completions", json={"prompt": "w", "max_tokens": "many"})
        assert bad.status == 400
    serve(check, max_model_len=128)


def test_with_an_api_key_v1_needs_it_and_health_and_metrics_do_not() -> None:
    async def check(client: TestClient, _api: Any) -> None:
        assert (await client.get("/v1/models")).status == 401
        wrong = await client.get("/v1/models", headers={"Authorization": "Bearer nope"})
        assert wrong.status == 401 and await wrong.json() == {"error": "Unauthorized"}
        ok = await client.get("/v1/models", headers={"Authorization": "Bearer k-123"})
        assert ok.status == 200
        assert (await client.get("/health")).status == 200
        assert (await client.get("/metrics")).status == 200
    serve(check, api_key=["k-123"])


def test_vllm_api_key_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VLLM_API_KEY", "env-key")

    async def check(client: TestClient, _api: Any) -> None:
        assert (await client.get("/v1/models")).status == 401
        ok = await client.get("/v1/models", headers={"Authorization": "Bearer env-key"})
        assert ok.status == 200
    serve(check)


def test_metrics_have_vllms_names_types_labels_and_buckets() -> None:
    async def check(client: TestClient, _api: Any) -> None:
        fams = await metrics(client)
        for name, (kind, buckets) in VLLM_0_20_1.items():
            assert fams[name].type == kind, name
            labels = {tuple(sorted(s.labels)) for s in fams[name].samples
                      if not s.name.endswith("_created")}
            extra = {"finished_reason"} if name == "vllm:request_success" else set()
            extra |= {"le"} if kind == "histogram" else set()
            assert {tuple(sorted({"engine", "model_name"} | extra))} <= labels, name
            assert all(s.labels["model_name"] == "served" and s.labels["engine"] == "0"
                       for s in fams[name].samples), name
            if buckets is not None:
                les = [float(s.labels["le"]) for s in fams[name].samples if s.name.endswith("_bucket")]
                assert les == [float(b) for b in buckets] + [float("inf")], name
        reasons = {s.labels["finished_reason"] for s in fams["vllm:request_success"].samples}
        assert reasons == {"stop", "length", "abort", "error", "repetition"}
    serve(check, served=["served"])


def test_metrics_count_the_requests_served(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DGXCLUSTER_STANDIN_PREFILL_TPS", "100000")
    monkeypatch.setenv("DGXCLUSTER_STANDIN_DECODE_TPS", "2000")

    async def check(client: TestClient, _api: Any) -> None:
        async def one(stream: bool) -> dict[str, Any]:
            resp = await client.post("/v1/chat/completions", json={
                "messages": [{"role": "user", "content": "a b c d e f g"}], "max_tokens": 8,
                "stream": stream, "stream_options": {"include_usage": True}})
            if stream:
                return dict((await events(resp))[-2]["usage"])
            return dict((await resp.json())["usage"])
        usages = await asyncio.gather(one(True), one(False), one(True))
        fams = await metrics(client)
        prompt = sum(u["prompt_tokens"] for u in usages)
        gen = sum(u["completion_tokens"] for u in usages)
        assert value(fams, "vllm:prompt_tokens", "vllm:prompt_tokens_total") == prompt
        assert value(fams, "vllm:generation_tokens", "vllm:generation_tokens_total") == gen
        assert value(fams, "vllm:request_success", "vllm:request_success_total",
                     finished_reason="length") == 3
        ttft = "vllm:time_to_first_token_seconds"
        assert value(fams, ttft, ttft + "_count") == 3
        itl = "vllm:inter_token_latency_seconds"
        assert value(fams, itl, itl + "_count") == gen - 3
        e2e = "vllm:e2e_request_latency_seconds"
        assert value(fams, e2e, e2e + "_count") == 3
        assert value(fams, "vllm:num_requests_running") == 0
    serve(check)


def test_running_waiting_and_kv_cache_follow_the_scheduler(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DGXCLUSTER_STANDIN_KV_CACHE_TOKENS", "1600")  # 100 blocks

    async def check(client: TestClient, api: Any) -> None:
        held = [sched.Request(prompt_tokens=320, max_tokens=16) for _ in range(3)]
        for r in held[:2]:
            await api.scheduler.admit(r)
        waiter = asyncio.ensure_future(api.scheduler.admit(held[2]))
        await asyncio.sleep(0)
        fams = await metrics(client)
        assert value(fams, "vllm:num_requests_running") == 2
        assert value(fams, "vllm:num_requests_waiting") == 1
        assert value(fams, "vllm:kv_cache_usage_perc") == pytest.approx(0.4)  # 2 x 20 blocks
        api.scheduler.release(held[0])
        await waiter
        fams = await metrics(client)
        assert value(fams, "vllm:num_requests_waiting") == 0
        assert value(fams, "vllm:num_requests_running") == 2
    serve(check, max_num_seqs=2)


def test_a_bad_pacing_variable_stops_the_standin_with_its_name(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DGXCLUSTER_STANDIN_DECODE_TPS", "fast")
    with pytest.raises(sched.ConfigError, match="DGXCLUSTER_STANDIN_DECODE_TPS"):
        make_api()


def test_the_hang_switch_is_taken_by_one_stand_in_which_hangs_from_then_on(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    api, _, _ = modules()
    monkeypatch.setattr(api, "SWITCH_DIR", str(tmp_path))
    monkeypatch.setattr(api, "_HUNG", [])
    monkeypatch.delenv("DGXCLUSTER_STANDIN_HANG", raising=False)

    async def check(client: TestClient, _api: Any) -> None:
        assert (await client.get("/health")).status == 200
        (tmp_path / api.HANG_FILE).write_text("once\n")
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(client.get("/health"), 0.5)
        assert not (tmp_path / api.HANG_FILE).exists()  # taken: the next stand-in serves
        with pytest.raises(asyncio.TimeoutError):  # and this one hangs from now on
            await asyncio.wait_for(client.get("/health"), 0.5)
        assert (await client.get("/v1/models")).status == 200  # the process still serves

    serve(check)


def test_the_exit_after_switch_is_read_from_the_file_then_the_environment(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    api, _, _ = modules()
    monkeypatch.setattr(api, "SWITCH_DIR", str(tmp_path))
    monkeypatch.delenv("DGXCLUSTER_STANDIN_EXIT_AFTER_S", raising=False)
    assert api.exit_after_s() is None
    monkeypatch.setenv("DGXCLUSTER_STANDIN_EXIT_AFTER_S", "7")
    assert api.exit_after_s() == 7.0
    (tmp_path / api.EXIT_FILE).write_text("1.5\n")
    assert api.exit_after_s() == 1.5
