"""`smoke` against an in-process OpenAI-shaped server on a real socket (tests/openai_stub.py)."""

from __future__ import annotations

import socket

import pytest

from dgxcluster.core.endpoint import NOT_SERVING, READY, UNHEALTHY
from dgxcluster.inventory import parse_inventory
from dgxcluster.inventory.load import Inventory
from dgxcluster.smoke import run_smoke
from tests.openai_stub import Behaviour, ipv6_loopback, serving


def inv(port: int, host: str = "127.0.0.1") -> Inventory:
    return parse_inventory(
        f"nodes:\n  - {{name: n1, host: '{host}', fabric_ip: 192.0.2.1}}\n"
        f"serve: {{model: Qwen/Qwen3-8B, port: {port}}}\n", environ={})


def test_streams_with_usage_and_measures() -> None:
    with serving() as (port, b):
        report = run_smoke(inv(port), prompt="hi", max_tokens=3, concurrency=4)
    assert report.ok and report.failure is None
    assert report.model == "Qwen/Qwen3-8B"
    assert len(report.requests) == 4 and len(b.seen) == 4
    body = b.seen[0]
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert body["max_tokens"] == 3 and body["messages"] == [{"role": "user", "content": "hi"}]
    r = report.requests[0]
    assert r.usage_reported and (r.prompt_tokens, r.completion_tokens) == (12, 3)
    assert r.text == "Tensor parallelism." and r.finish_reason == "length"
    assert r.ttft_s is not None and 0 <= r.ttft_s <= r.total_s
    assert report.completion_tokens == 12
    doc = report.to_json()
    assert doc["ok"] is True and len(doc["requests"]) == 4  # type: ignore[arg-type]


def test_without_usage_counts_chunks_and_says_so() -> None:
    with serving(behaviour=Behaviour(usage=False)) as (port, _):
        r = run_smoke(inv(port)).requests[0]
    assert r.ok and not r.usage_reported and r.completion_tokens == 3


def test_unhealthy_server_is_a_failure_with_the_reason() -> None:
    with serving(behaviour=Behaviour(health=503)) as (port, b):
        report = run_smoke(inv(port))
    assert not report.ok and b.seen == []
    assert report.endpoint.state == UNHEALTHY
    assert report.failure == (f"vLLM at http://127.0.0.1:{port} is unhealthy: "
                              "/health returned 503: engine dead")


def test_refused_connection_says_nothing_serves() -> None:
    with socket.socket() as s:  # a port nobody listens on: bound, never listening
        s.bind(("127.0.0.1", 0))
        report = run_smoke(inv(s.getsockname()[1]))
    assert report.endpoint.state == NOT_SERVING
    assert report.failure is not None and "nothing is serving at" in report.failure
    assert "is the cluster started?" in report.failure


def test_failed_request_fails_the_smoke_test() -> None:
    with serving(behaviour=Behaviour(chat_status=404)) as (port, _):
        report = run_smoke(inv(port), concurrency=2)
    assert report.endpoint.state == READY and not report.ok
    assert report.failure is not None and report.failure.startswith("2 of 2 request(s) failed: HTTP 404")


def test_uses_the_served_model_when_the_inventory_names_another() -> None:
    with serving(behaviour=Behaviour(models=["other-model"])) as (port, b):
        assert run_smoke(inv(port)).ok
    assert b.seen[0]["model"] == "other-model"


@pytest.mark.skipif(not ipv6_loopback(), reason="no IPv6 loopback on this machine")
def test_an_ipv6_head_is_reached_in_brackets() -> None:
    with serving("::1") as (port, b):
        report = run_smoke(inv(port, "::1"))
    assert report.ok, report.failure
    assert report.endpoint.url == f"http://[::1]:{port}"
    assert b.paths == ["/health", "/v1/models", "/v1/chat/completions"]
