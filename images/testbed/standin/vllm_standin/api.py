"""The OpenAI-compatible HTTP API of the stand-in, in vLLM's shapes: /health, /v1/models,
/v1/completions, /v1/chat/completions (with `stream: true` server-sent events and usage),
/metrics (Prometheus text, vllm:* names) and /version. Replies are canned text, not a model.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import socket
import time
import uuid
from typing import Any

from aiohttp import web

from vllm_standin import NAME, VERSION, log
from vllm_standin.engine import Engine

ROUTES = [("/health", "GET"), ("/v1/models", "GET"), ("/v1/completions", "POST"),
          ("/v1/chat/completions", "POST"), ("/metrics", "GET"), ("/version", "GET")]


class Stats:
    def __init__(self) -> None:
        self.running = 0
        self.prompt_tokens = 0
        self.generation_tokens = 0
        self.finished: dict[str, int] = {"stop": 0, "length": 0}
        self.latency_sum = 0.0
        self.latency_count = 0


def _words(text: str) -> list[str]:
    return text.split()


def _error(status: int, kind: str, message: str) -> web.Response:
    body = {"error": {"message": message, "type": kind, "param": None, "code": status}}
    return web.json_response(body, status=status)


class Api:
    def __init__(self, args: argparse.Namespace, engine: Engine, logger: logging.Logger) -> None:
        self.args = args
        self.engine = engine
        self.log = logger
        self.names = list(args.served_model_name or [args.model])
        self.created = int(time.time())
        self.max_model_len = args.max_model_len or 4096
        self.stats = Stats()
        self.token_s = float(os.environ.get("DGXCLUSTER_STANDIN_TOKEN_S", "0") or 0)

    # -- plain endpoints ---------------------------------------------------------------

    async def health(self, _req: web.Request) -> web.Response:
        if self.engine.dead:
            return web.Response(status=503)
        return web.Response(status=200)

    async def version(self, _req: web.Request) -> web.Response:
        return web.json_response({"version": VERSION})

    async def models(self, _req: web.Request) -> web.Response:
        data = [{
            "id": name, "object": "model", "created": self.created, "owned_by": NAME,
            "root": self.args.model, "parent": None, "max_model_len": self.max_model_len,
            "permission": [{"id": f"modelperm-{uuid.uuid4().hex}", "object": "model_permission",
                            "created": self.created, "allow_create_engine": False,
                            "allow_sampling": True, "allow_logprobs": True,
                            "allow_search_indices": False, "allow_view": True,
                            "allow_fine_tuning": False, "organization": "*", "group": None,
                            "is_blocking": False}],
        } for name in self.names]
        return web.json_response({"object": "list", "data": data})

    async def metrics(self, _req: web.Request) -> web.Response:
        st = self.stats
        label = f'engine="0",model_name="{self.names[0]}"'
        lines = [
            "# HELP vllm:num_requests_running Number of requests in model execution batches.",
            "# TYPE vllm:num_requests_running gauge",
            f"vllm:num_requests_running{{{label}}} {float(st.running)}",
            "# HELP vllm:num_requests_waiting Number of requests waiting to be processed.",
            "# TYPE vllm:num_requests_waiting gauge",
            f"vllm:num_requests_waiting{{{label}}} 0.0",
            "# HELP vllm:prompt_tokens_total Number of prefill tokens processed.",
            "# TYPE vllm:prompt_tokens_total counter",
            f"vllm:prompt_tokens_total{{{label}}} {float(st.prompt_tokens)}",
            "# HELP vllm:generation_tokens_total Number of generation tokens processed.",
            "# TYPE vllm:generation_tokens_total counter",
            f"vllm:generation_tokens_total{{{label}}} {float(st.generation_tokens)}",
            "# HELP vllm:request_success_total Count of successfully processed requests.",
            "# TYPE vllm:request_success_total counter",
            *[f'vllm:request_success_total{{{label},finished_reason="{k}"}} {float(v)}'
              for k, v in st.finished.items()],
            "# HELP vllm:e2e_request_latency_seconds Histogram of e2e request latency in seconds.",
            "# TYPE vllm:e2e_request_latency_seconds histogram",
            f"vllm:e2e_request_latency_seconds_sum{{{label}}} {st.latency_sum}",
            f"vllm:e2e_request_latency_seconds_count{{{label}}} {float(st.latency_count)}",
        ]
        return web.Response(text="\n".join(lines) + "\n",
                            content_type="text/plain", charset="utf-8")

    # -- generation ----------------------------------------------------------------------

    def _reply(self, prompt_words: int, said: str, max_tokens: int) -> tuple[list[str], str]:
        text = (f"This is the {NAME} on the dgxcluster testbed; no model is loaded. "
                f"You said: {said}").strip()
        words = _words(text)
        if len(words) > max_tokens:
            return words[:max_tokens], "length"
        return words, "stop"

    async def _request(self, req: web.Request) -> tuple[dict[str, Any] | None, web.Response | None]:
        try:
            body = await req.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            return None, _error(400, "BadRequestError", "request body is not valid JSON")
        if not isinstance(body, dict):
            return None, _error(400, "BadRequestError", "request body must be a JSON object")
        model = body.get("model")
        if model is not None and model not in self.names and model != self.args.model:
            return None, _error(404, "NotFoundError", f"The model `{model}` does not exist.")
        if self.engine.dead:
            return None, _error(503, "EngineDeadError", self.engine.dead)
        return body, None

    async def chat(self, req: web.Request) -> web.StreamResponse:
        body, err = await self._request(req)
        if err is not None or body is None:
            return err or _error(400, "BadRequestError", "empty request")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return _error(400, "BadRequestError", "`messages` must be a non-empty list")
        contents = [str(m.get("content", "")) for m in messages if isinstance(m, dict)]
        last_user = next((str(m.get("content", "")) for m in reversed(messages)
                          if isinstance(m, dict) and m.get("role") == "user"), "")
        max_tokens = int(body.get("max_completion_tokens") or body.get("max_tokens") or 64)
        prompt_tokens = sum(len(_words(c)) for c in contents) + 3 * len(contents)
        words, reason = self._reply(prompt_tokens, last_user, max_tokens)
        return await self._respond(req, body, "chat", prompt_tokens, words, reason)

    async def completions(self, req: web.Request) -> web.StreamResponse:
        body, err = await self._request(req)
        if err is not None or body is None:
            return err or _error(400, "BadRequestError", "empty request")
        prompt = body.get("prompt")
        if isinstance(prompt, list):
            prompt = " ".join(str(p) for p in prompt)
        if not isinstance(prompt, str):
            return _error(400, "BadRequestError", "`prompt` must be a string or a list of strings")
        max_tokens = int(body.get("max_tokens") or 16)
        prompt_tokens = len(_words(prompt))
        words, reason = self._reply(prompt_tokens, prompt, max_tokens)
        return await self._respond(req, body, "text", prompt_tokens, words, reason)

    async def _respond(self, req: web.Request, body: dict[str, Any], kind: str, prompt_tokens: int,
                       words: list[str], reason: str) -> web.StreamResponse:
        t0 = time.time()
        self.stats.running += 1
        try:
            usage = {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens + len(words),
                     "completion_tokens": len(words), "prompt_tokens_details": None}
            rid = f"{'chatcmpl' if kind == 'chat' else 'cmpl'}-{uuid.uuid4().hex}"
            model = body.get("model") or self.names[0]
            if body.get("stream"):
                resp = await self._stream(req, body, kind, rid, model, words, reason, usage)
            else:
                text = " ".join(words)
                if kind == "chat":
                    choice: dict[str, Any] = {
                        "index": 0, "message": {"role": "assistant", "content": text,
                                                "reasoning_content": None, "tool_calls": []},
                        "logprobs": None, "finish_reason": reason, "stop_reason": None}
                    obj = "chat.completion"
                else:
                    choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": reason,
                              "stop_reason": None, "prompt_logprobs": None}
                    obj = "text_completion"
                resp = web.json_response({"id": rid, "object": obj, "created": int(t0),
                                          "model": model, "choices": [choice], "usage": usage,
                                          "prompt_logprobs": None})
            self.stats.prompt_tokens += prompt_tokens
            self.stats.generation_tokens += len(words)
            self.stats.finished[reason] = self.stats.finished.get(reason, 0) + 1
            self.stats.latency_sum += time.time() - t0
            self.stats.latency_count += 1
            return resp
        finally:
            self.stats.running -= 1

    async def _stream(self, req: web.Request, body: dict[str, Any], kind: str, rid: str, model: str,
                      words: list[str], reason: str, usage: dict[str, Any]) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                           "Cache-Control": "no-cache"})
        await resp.prepare(req)
        created = int(time.time())
        obj = "chat.completion.chunk" if kind == "chat" else "text_completion"

        async def send(choices: list[dict[str, Any]], extra: dict[str, Any] | None = None) -> None:
            chunk = {"id": rid, "object": obj, "created": created, "model": model, "choices": choices}
            chunk.update(extra or {})
            await resp.write(f"data: {json.dumps(chunk)}\n\n".encode())

        def choice(piece: str, finish: str | None, first: bool = False) -> dict[str, Any]:
            if kind == "chat":
                delta: dict[str, Any] = {"content": piece}
                if first:
                    delta["role"] = "assistant"
                return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
            return {"index": 0, "text": piece, "logprobs": None, "finish_reason": finish,
                    "stop_reason": None}

        if kind == "chat":
            await send([choice("", None, first=True)])
        for i, word in enumerate(words):
            if self.token_s:
                await asyncio.sleep(self.token_s)
            last = i == len(words) - 1
            await send([choice(word if i == 0 else " " + word, reason if last else None)])
        if not words:
            await send([choice("", reason)])
        opts = body.get("stream_options") or {}
        if isinstance(opts, dict) and opts.get("include_usage"):
            await send([], {"usage": usage})
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp


@web.middleware
async def access_log(req: web.Request, handler: Any) -> web.StreamResponse:
    resp: web.StreamResponse = await handler(req)
    peer = req.transport.get_extra_info("peername") if req.transport else None
    who = f"{peer[0]}:{peer[1]}" if peer else "-"
    log.uvicorn(f'{who} - "{req.method} {req.path_qs} HTTP/{req.version.major}.{req.version.minor}" '
                f"{resp.status} {resp.reason}")
    return resp


def serve(args: argparse.Namespace, engine: Engine, sock: socket.socket, host: str,
          started: float, logger: logging.Logger) -> int:
    api = Api(args, engine, logger)
    app = web.Application(middlewares=[access_log])
    app.router.add_get("/health", api.health)
    app.router.add_get("/version", api.version)
    app.router.add_get("/v1/models", api.models)
    app.router.add_get("/metrics", api.metrics)
    app.router.add_post("/v1/completions", api.completions)
    app.router.add_post("/v1/chat/completions", api.chat)
    return asyncio.run(_run(app, api, sock, host, args.port, started, logger))


async def _run(app: web.Application, api: Api, sock: socket.socket, host: str, port: int,
               started: float, logger: logging.Logger) -> int:
    stop = asyncio.Event()
    code = 0
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    logger.info("Starting vLLM API server 0 on http://%s:%d", host, port)
    logger.info("Available routes are:")
    for path, method in ROUTES:
        logger.info("Route: %s, Methods: %s", path, method)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    log.uvicorn(f"Started server process [{os.getpid()}]")
    log.uvicorn("Waiting for application startup.")
    await web.SockSite(runner, sock).start()
    log.uvicorn("Application startup complete.")
    log.uvicorn(f"Uvicorn running on http://{host}:{port} (Press CTRL+C to quit)")
    ready = time.time()
    logger.info("%s: ready after %.3f s (started at epoch %.3f, ready at epoch %.3f)",
                NAME, ready - started, started, ready)

    async def watch() -> None:
        nonlocal code
        while not stop.is_set():
            await asyncio.sleep(5)
            try:
                await asyncio.to_thread(api.engine.check_alive)
            except Exception as exc:
                api.engine.dead = f"a Ray worker of the engine died: {type(exc).__name__}"
                logger.error("EngineCore encountered a fatal error. (%s: %s)", NAME, api.engine.dead)
                logger.error("Engine core proc died unexpectedly, shutting down client.")
                code = 1
                await asyncio.sleep(2)  # /health answers 503 meanwhile, as vLLM's does
                stop.set()

    watcher = asyncio.create_task(watch())
    await stop.wait()
    watcher.cancel()
    log.uvicorn("Shutting down")
    log.uvicorn("Waiting for application shutdown.")
    await runner.cleanup()
    log.uvicorn("Application shutdown complete.")
    log.uvicorn(f"Finished server process [{os.getpid()}]")
    await asyncio.to_thread(api.engine.shutdown)
    logger.info("%s: stopped", NAME)
    return code
