"""Test double for vLLM's OpenAI-compatible API server, in this process, on a real socket.

Shaped like vLLM's answers: `GET /health` (200 with an empty body, or 503 when the engine
died), `GET /v1/models` (`{"object": "list", "data": [{"id": ..., "object": "model"}]}`),
and `POST /v1/chat/completions` with `stream: true` answered as server-sent events
(`data: {chunk}` lines, an optional usage chunk, then `data: [DONE]`) in a chunked HTTP/1.1
body, as uvicorn sends a streaming response. It listens on IPv4 or IPv6 loopback, so the
operator-side HTTP code is exercised over real connections, IPv6 URLs included.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Behaviour:
    health: int = 200
    models: list[str] = field(default_factory=lambda: ["Qwen/Qwen3-8B"])
    usage: bool = True
    chat_status: int = 200
    seen: list[dict[str, object]] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    auth: list[str | None] = field(default_factory=list)  # each request's Authorization
    key: str | None = None  # as vLLM with --api-key: /v1/* without `Bearer key` gets 401


def _unauthorized(b: Behaviour, path: str, header: str | None) -> bool:
    return b.key is not None and path.startswith("/v1") and header != f"Bearer {b.key}"


def _chunk(text: str, finish: str | None = None) -> dict[str, object]:
    return {"id": "c", "object": "chat.completion.chunk", "model": "Qwen/Qwen3-8B",
            "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": finish}]}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    b: Behaviour

    def _send(self, status: int, body: bytes, ctype: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("content-type", ctype)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _refused(self) -> bool:
        """Records the request's Authorization; answers 401 as vLLM does when wrong."""
        b = self.b
        b.auth.append(self.headers.get("authorization"))
        if not _unauthorized(b, self.path, self.headers.get("authorization")):
            return False
        self._send(401, b'{"error": "Unauthorized"}')
        return True

    def do_GET(self) -> None:
        b = self.b
        b.paths.append(self.path)
        if self._refused():
            return
        if self.path == "/health":
            self._send(b.health, b"" if b.health == 200 else b"engine dead", "text/plain")
        elif self.path == "/v1/models":
            self._send(200, json.dumps({"object": "list", "data": [
                {"id": m, "object": "model"} for m in b.models]}).encode())
        else:
            self._send(404, b'{"detail":"Not Found"}')

    def do_POST(self) -> None:
        b = self.b
        b.paths.append(self.path)
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        if self._refused():
            return
        if self.path != "/v1/chat/completions":
            self._send(404, b'{"detail":"Not Found"}')
            return
        b.seen.append(body)
        if b.chat_status != 200:
            self._send(b.chat_status, b'{"error": {"message": "bad model"}}')
            return
        events: list[object] = [{"choices": [{"index": 0, "delta": {"role": "assistant"}}]},
                                _chunk("Tensor "), _chunk("parallel"), _chunk("ism.", "length")]
        if b.usage:
            events.append({"choices": [], "usage": {"prompt_tokens": 12,
                                                    "completion_tokens": 3,
                                                    "total_tokens": 15}})
        self.send_response(200)
        self.send_header("content-type", "text/event-stream; charset=utf-8")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        for e in [*(json.dumps(e) for e in events), "[DONE]"]:
            data = f"data: {e}\n\n".encode()
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")

    def log_message(self, *args: object) -> None:
        pass



def _handler(b: Behaviour) -> type[BaseHTTPRequestHandler]:
    return type("Handler", (_Handler,), {"b": b})


class _Server(ThreadingHTTPServer):
    daemon_threads = True


class _Server6(_Server):
    address_family = socket.AF_INET6


@contextmanager
def serving(host: str = "127.0.0.1", behaviour: Behaviour | None = None
            ) -> Iterator[tuple[int, Behaviour]]:
    """(port, behaviour) of a stub listening on `host` (an IPv4 or IPv6 literal)."""
    b = behaviour or Behaviour()
    cls = _Server6 if ":" in host else _Server
    server = cls((host, 0), _handler(b))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_address[1], b
    finally:
        server.shutdown()
        server.server_close()


def ipv6_loopback() -> bool:
    """Whether this machine can listen on ::1 (some CI containers have IPv6 off)."""
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False
