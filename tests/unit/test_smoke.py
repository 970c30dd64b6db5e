"""`smoke` and the endpoint probe against an in-process OpenAI-shaped transport (httpx mock)."""

from __future__ import annotations

import json

import httpx
import pytest

from dgxcluster.core.endpoint import NOT_SERVING, READY, UNHEALTHY, UNREACHABLE, httpx_get, probe, stdlib_get
from dgxcluster.inventory import parse_inventory
from dgxcluster.smoke import run_smoke

INV = parse_inventory(
    "nodes:\n  - {name: n1, host: 10.9.9.1, fabric_ip: 192.0.2.1}\n"
    "serve: {model: Qwen/Qwen3-8B, port: 8123}\n", environ={})
URL = "http://10.9.9.1:8123"


def sse(events: list[object]) -> bytes:
    return b"".join(f"data: {json.dumps(e)}\n\n".encode() for e in events) + b"data: [DONE]\n\n"


def chunk(text: str, finish: str | None = None) -> dict[str, object]:
    return {"id": "c", "object": "chat.completion.chunk", "model": "Qwen/Qwen3-8B",
            "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": finish}]}


def server(*, health: int = 200, models: list[str] | None = None, usage: bool = True,
           chat_status: int = 200) -> tuple[httpx.Client, list[dict[str, object]]]:
    seen: list[dict[str, object]] = []

    def handle(req: httpx.Request) -> httpx.Response:
        assert str(req.url).startswith(URL)
        if req.url.path == "/health":
            return httpx.Response(health, text="" if health == 200 else "engine dead")
        if req.url.path == "/v1/models":
            ids = ["Qwen/Qwen3-8B"] if models is None else models
            return httpx.Response(200, json={"object": "list",
                                             "data": [{"id": m, "object": "model"} for m in ids]})
        if req.url.path == "/v1/chat/completions":
            body = json.loads(req.content)
            seen.append(body)
            if chat_status != 200:
                return httpx.Response(chat_status, json={"error": {"message": "bad model"}})
            events: list[object] = [{"choices": [{"index": 0, "delta": {"role": "assistant"}}]},
                                    chunk("Tensor "), chunk("parallel"), chunk("ism.", "length")]
            if usage:
                events.append({"choices": [], "usage": {"prompt_tokens": 12,
                                                        "completion_tokens": 3,
                                                        "total_tokens": 15}})
            return httpx.Response(200, content=sse(events),
                                  headers={"content-type": "text/event-stream"})
        return httpx.Response(404)

    return httpx.Client(transport=httpx.MockTransport(handle)), seen


def test_streams_with_usage_and_measures() -> None:
    client, seen = server()
    report = run_smoke(INV, prompt="hi", max_tokens=3, concurrency=4, client=client)
    assert report.ok and report.failure is None
    assert report.model == "Qwen/Qwen3-8B"
    assert len(report.requests) == 4 and len(seen) == 4
    body = seen[0]
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
    client, _ = server(usage=False)
    r = run_smoke(INV, client=client).requests[0]
    assert r.ok and not r.usage_reported and r.completion_tokens == 3


def test_unhealthy_server_is_a_failure_with_the_reason() -> None:
    client, seen = server(health=503)
    report = run_smoke(INV, client=client)
    assert not report.ok and seen == []
    assert report.endpoint.state == UNHEALTHY
    assert report.failure == f"vLLM at {URL} is unhealthy: /health returned 503: engine dead"


def test_no_model_listed_yet_is_unhealthy() -> None:
    client, _ = server(models=[])
    assert probe(URL, httpx_get(client)).state == UNHEALTHY


def test_refused_connection_says_nothing_serves() -> None:
    def refuse(req: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused", request=req)

    client = httpx.Client(transport=httpx.MockTransport(refuse))
    report = run_smoke(INV, client=client)
    assert report.endpoint.state == NOT_SERVING
    assert report.failure is not None and "nothing is serving at" in report.failure
    assert "is the cluster started?" in report.failure


def test_failed_request_fails_the_smoke_test() -> None:
    client, _ = server(chat_status=404)
    report = run_smoke(INV, client=client, concurrency=2)
    assert report.endpoint.state == READY and not report.ok
    assert report.failure is not None and report.failure.startswith("2 of 2 request(s) failed: HTTP 404")


@pytest.mark.parametrize("served", ["other-model"])
def test_uses_the_served_model_when_the_inventory_names_another(served: str) -> None:
    client, seen = server(models=[served])
    assert run_smoke(INV, client=client).ok
    assert seen[0]["model"] == served


def test_stdlib_probe_tells_refused_from_unreachable() -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on: bound, never listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        assert probe(f"http://127.0.0.1:{port}", stdlib_get, timeout=2).state == NOT_SERVING

    def timeout(_url: str, _t: float) -> tuple[int, str]:
        raise TimeoutError("timed out")

    assert probe("http://192.0.2.1:8000", timeout).state == UNREACHABLE


def test_stdlib_probe_against_a_local_server() -> None:
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b"" if self.path == "/health" else json.dumps(
                {"data": [{"id": "m1"}]}).encode()
            self.send_response(200)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        p = probe(f"http://127.0.0.1:{server.server_address[1]}", stdlib_get)
    finally:
        server.shutdown()
    assert (p.state, p.health, p.models) == (READY, 200, ["m1"])
