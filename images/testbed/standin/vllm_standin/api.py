"""The OpenAI-compatible HTTP API of the stand-in, in vLLM's shapes: /health, /v1/models,
/v1/completions, /v1/chat/completions (with `stream: true` server-sent events and usage),
/metrics (vLLM's Prometheus metrics, see metrics.py) and /version. Replies are canned text,
not a model, but they are paced like a server under load (scheduler.py): queueing, prefill,
then streamed tokens at the configured rates. Tokens are whitespace-separated words.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import logging
import os
import signal
import socket
import time
import uuid
from typing import TYPE_CHECKING, Any, Protocol

from aiohttp import web

from vllm_standin import NAME, VERSION, log
from vllm_standin.metrics import CONTENT_TYPE, Metrics
from vllm_standin.scheduler import BLOCK_SIZE, Rates, Request, Scheduler, now

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

ROUTES = [("/health", "GET"), ("/v1/models", "GET"), ("/v1/completions", "POST"),
          ("/v1/chat/completions", "POST"), ("/metrics", "GET"), ("/version", "GET")]
#: vLLM's chat template adds tokens around each message; the stand-in counts this many.
CHAT_TOKENS_PER_MESSAGE = 3
TEMPLATE_TOKEN_ID = 151644
FILLER = ["and", "so", "the", "stand-in", "goes", "on", "talking"]


class EngineState(Protocol):
    """What the API needs from the engine side (engine.Engine, or a no-op for tests)."""

    dead: str | None

    def check_alive(self) -> None: ...

    def shutdown(self) -> None: ...


def _words(text: str) -> list[str]:
    return text.split()


def _token_id(word: str) -> int:
    """A stable stand-in token id for a word (vLLM returns the tokenizer's ids)."""
    return int.from_bytes(hashlib.blake2b(word.encode(), digest_size=4).digest(), "big") % 150000


def _prompt_ids(words: list[str], count: int) -> list[int]:
    """One id per prompt token: the words', then the chat template's (counted, not words)."""
    ids = [_token_id(w) for w in words]
    return ids + [TEMPLATE_TOKEN_ID] * max(0, count - len(ids))


def _error(status: int, kind: str, message: str) -> web.Response:
    body = {"error": {"message": message, "type": kind, "param": None, "code": status}}
    return web.json_response(body, status=status)


#: Fault switches for the testbed, reachable without editing the image: files in the log
#: folder start mounts into the head container (or the variables), read by the stand-in.
SWITCH_DIR = os.environ.get("DGXCLUSTER_STANDIN_SWITCH_DIR", "/var/log/dgxcluster")
HANG_FILE = "standin-hang"  # "all": every stand-in hangs; else the first one to see it takes it
EXIT_FILE = "standin-exit-after"  # holds N: every stand-in started exits N s after it serves
_HUNG: list[bool] = []  # this process took the hang switch: it hangs until it ends


def _switch(name: str) -> str | None:
    try:
        with open(os.path.join(SWITCH_DIR, name)) as fh:
            return fh.read().strip()
    except OSError:
        return None


def hang_switch() -> bool:
    """The "hang" switch: vLLM stuck with its process alive (the container still "Up"). The
    file (any content but "all") is taken by the first stand-in that sees it, which removes
    it and hangs from then on, so a stand-in started after it serves again."""
    if _HUNG or os.environ.get("DGXCLUSTER_STANDIN_HANG"):
        return True
    who = _switch(HANG_FILE)
    if who is None:
        return False
    if who != "all":
        try:
            os.remove(os.path.join(SWITCH_DIR, HANG_FILE))
        except OSError:
            return False  # another stand-in took it
        _HUNG.append(True)
    return True


def exit_after_s() -> float | None:
    """The "exit after N s" switch (file, else DGXCLUSTER_STANDIN_EXIT_AFTER_S)."""
    text = _switch(EXIT_FILE) or os.environ.get("DGXCLUSTER_STANDIN_EXIT_AFTER_S", "")
    try:
        return float(text) if text else None
    except ValueError:
        return None


def _api_keys(args: argparse.Namespace) -> list[str]:
    """vLLM's rule: --api-key (one or more), else VLLM_API_KEY; empty means no auth."""
    given = getattr(args, "api_key", None)
    keys = [given] if isinstance(given, str) else list(given or [])
    return [k for k in (keys or [os.environ.get("VLLM_API_KEY", "")]) if k]


class Api:
    def __init__(self, args: argparse.Namespace, engine: EngineState, logger: logging.Logger) -> None:
        self.args = args
        self.engine = engine
        self.log = logger
        self.names = list(args.served_model_name or [args.model])
        self.created = int(time.time())
        self.max_model_len = args.max_model_len or 4096
        self.rates = Rates.from_env(os.environ, getattr(args, "max_num_seqs", None) or 256)
        # one scheduler and one set of series per engine: a data-parallel head (dp.py) fronts
        # --data-parallel-size engines, labelled engine="0".. as in vLLM's /metrics
        engines = max(1, int(getattr(args, "data_parallel_size", 1) or 1))
        self.schedulers = [Scheduler(self.rates) for _ in range(engines)]
        first = Metrics(self.names[0], self.max_model_len)
        self.engine_stats = [first, *(Metrics(self.names[0], self.max_model_len, str(i), first)
                                      for i in range(1, engines))]
        self.scheduler, self.stats = self.schedulers[0], first
        self._next = 0
        self.keys = [hashlib.sha256(k.encode()).digest() for k in _api_keys(args)]

    def describe(self) -> list[str]:
        """Start-up lines: vLLM's KV cache lines, then the stand-in's pacing."""
        r = self.rates
        return [
            f"GPU KV cache size: {r.kv_cache_tokens:,} tokens",
            f"Maximum concurrency for {self.max_model_len:,} tokens per request: "
            f"{r.kv_cache_tokens / self.max_model_len:.2f}x",
            f"{NAME}: pacing prefill {r.prefill_tps:g} tok/s and decode {r.decode_tps:g} tok/s per "
            f"request, batch slowdown {r.slowdown:g}, max {r.max_num_seqs} running, "
            f"KV blocks of {BLOCK_SIZE} tokens",
        ]

    # -- plain endpoints ---------------------------------------------------------------

    async def health(self, _req: web.Request) -> web.Response:
        if hang_switch():
            await asyncio.Event().wait()  # the "hang" switch: never answers, process alive
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

    def _pick(self) -> int:
        """The engine for a request: vLLM's DP client picks the least loaded (waiting x 4 +
        running, from the coordinator's counts); ties here go round the engines in turn."""
        n = len(self.schedulers)
        order = [(self._next + i) % n for i in range(n)]
        pick = min(order, key=lambda e: self.schedulers[e].num_waiting * 4
                   + len(self.schedulers[e].running))
        self._next = (pick + 1) % n
        return pick

    async def metrics(self, _req: web.Request) -> web.Response:
        for sched, stats in zip(self.schedulers, self.engine_stats, strict=True):
            stats.scheduler_state(len(sched.running), sched.num_waiting, sched.kv_cache_usage)
        resp = web.Response(body=self.stats.render())
        resp.headers["Content-Type"] = CONTENT_TYPE
        return resp

    # -- generation ----------------------------------------------------------------------

    def _reply(self, said: str, max_tokens: int, min_tokens: int) -> tuple[list[str], str]:
        text = (f"This is the {NAME} on the dgxcluster testbed; no model is loaded. "
                f"You said: {said}").strip()
        words = _words(text)
        while len(words) < min(min_tokens, max_tokens):
            words += FILLER
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

    def _limits(self, body: dict[str, Any], default: int, *keys: str) -> tuple[int, int] | web.Response:
        raw = next((body[k] for k in keys if body.get(k) is not None), default)
        try:
            max_tokens = int(raw)
            min_tokens = int(body.get("min_tokens") or 0)
        except (TypeError, ValueError):
            return _error(400, "BadRequestError", f"`{keys[0]}` must be an integer")
        if max_tokens < 1:
            return _error(400, "BadRequestError", f"`{keys[0]}` must be at least 1")
        if body.get("ignore_eos"):
            min_tokens = max_tokens
        return max_tokens, min_tokens

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
        limits = self._limits(body, 64, "max_completion_tokens", "max_tokens")
        if isinstance(limits, web.Response):
            return limits
        prompt = [w for c in contents for w in _words(c)]
        prompt_tokens = len(prompt) + CHAT_TOKENS_PER_MESSAGE * len(contents)
        words, reason = self._reply(last_user, *limits)
        return await self._respond(req, body, "chat", prompt, prompt_tokens, words, reason, limits[0])

    async def completions(self, req: web.Request) -> web.StreamResponse:
        body, err = await self._request(req)
        if err is not None or body is None:
            return err or _error(400, "BadRequestError", "empty request")
        prompt = body.get("prompt")
        if isinstance(prompt, list):
            prompt = " ".join(str(p) for p in prompt)
        if not isinstance(prompt, str):
            return _error(400, "BadRequestError", "`prompt` must be a string or a list of strings")
        limits = self._limits(body, 16, "max_tokens")
        if isinstance(limits, web.Response):
            return limits
        words, reason = self._reply(prompt, *limits)
        prompt_words = _words(prompt)
        return await self._respond(req, body, "text", prompt_words, len(prompt_words), words, reason,
                                   limits[0])

    async def _respond(self, req: web.Request, body: dict[str, Any], kind: str, prompt: list[str],
                       prompt_tokens: int, words: list[str], reason: str,
                       max_tokens: int) -> web.StreamResponse:
        if prompt_tokens + max_tokens > self.max_model_len:
            return _error(400, "BadRequestError",
                          f"This model's maximum context length is {self.max_model_len} tokens. "
                          f"However, you requested {prompt_tokens + max_tokens} tokens "
                          f"({prompt_tokens} in the messages, {max_tokens} in the completion).")
        job = Request(prompt_tokens=prompt_tokens, max_tokens=max_tokens)
        rid = f"{'chatcmpl' if kind == 'chat' else 'cmpl'}-{uuid.uuid4().hex}"
        model = body.get("model") or self.names[0]
        usage = {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens + len(words),
                 "completion_tokens": len(words), "prompt_tokens_details": None}
        finish = "abort"
        engine = self._pick()
        if engine in getattr(self.engine, "lost_engines", ()):  # dp.py: a remote engine gone
            await asyncio.Event().wait()  # the request went to a socket nobody reads
        try:
            await self.schedulers[engine].admit(job)
            if body.get("stream"):
                resp = await self._stream(req, body, kind, rid, model, prompt, job, words, reason,
                                          usage, engine)
            else:
                await self._generate(job, len(words), None, engine)
                resp = self._whole(body, kind, rid, model, prompt, words, reason, usage)
            finish = reason
            return resp
        finally:
            self.schedulers[engine].release(job)
            self.engine_stats[engine].finished(job, finish, now(), max_tokens)

    async def _generate(self, job: Request, count: int,
                        on_token: Callable[[int], Awaitable[None]] | None, engine: int = 0) -> None:
        """Run the request through its engine's scheduler, counting what vLLM's metrics count."""
        last: float | None = None
        stats = self.engine_stats[engine]
        async for i in self.schedulers[engine].decode(job, count):
            if i == 0:
                stats.first_token(job)
            stats.tokens(job, 1, last)
            last = job.token_times[-1]
            if on_token is not None:
                await on_token(i)

    def _whole(self, body: dict[str, Any], kind: str, rid: str, model: str, prompt: list[str],
               words: list[str], reason: str, usage: dict[str, Any]) -> web.Response:
        text = " ".join(words)
        ids = [_token_id(w) for w in words] if body.get("return_token_ids") else None
        if kind == "chat":
            choice: dict[str, Any] = {
                "index": 0, "message": {"role": "assistant", "content": text,
                                        "reasoning_content": None, "tool_calls": []},
                "logprobs": None, "finish_reason": reason, "stop_reason": None, "token_ids": ids}
            obj = "chat.completion"
        else:
            choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": reason,
                      "stop_reason": None, "prompt_logprobs": None, "token_ids": ids}
            obj = "text_completion"
        out: dict[str, Any] = {"id": rid, "object": obj, "created": int(time.time()), "model": model,
                               "choices": [choice], "usage": usage, "prompt_logprobs": None}
        if body.get("return_token_ids"):
            out["prompt_token_ids"] = _prompt_ids(prompt, usage["prompt_tokens"])
        return web.json_response(out)

    async def _stream(self, req: web.Request, body: dict[str, Any], kind: str, rid: str, model: str,
                      prompt: list[str], job: Request, words: list[str], reason: str,
                      usage: dict[str, Any], engine: int = 0) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                           "Cache-Control": "no-cache"})
        await resp.prepare(req)
        created = int(time.time())
        obj = "chat.completion.chunk" if kind == "chat" else "text_completion"
        with_ids = bool(body.get("return_token_ids"))

        async def send(choices: list[dict[str, Any]], extra: dict[str, Any] | None = None) -> None:
            chunk = {"id": rid, "object": obj, "created": created, "model": model, "choices": choices}
            chunk.update(extra or {})
            await resp.write(f"data: {json.dumps(chunk)}\n\n".encode())

        def choice(piece: str, finish: str | None, ids: list[int] | None,
                   first: bool = False) -> dict[str, Any]:
            extra = {"token_ids": ids} if ids is not None else {}
            if kind == "chat":
                delta: dict[str, Any] = {"content": piece}
                if first:
                    delta["role"] = "assistant"
                return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish, **extra}
            return {"index": 0, "text": piece, "logprobs": None, "finish_reason": finish,
                    "stop_reason": None, **extra}

        prompt_ids = {"prompt_token_ids": _prompt_ids(prompt, job.prompt_tokens)} if with_ids else {}

        async def first_chunk() -> dict[str, Any] | None:
            """vLLM sends the chat role chunk in its first engine iteration, i.e. once the prompt
            is processed (clients such as llama-benchy time prefill by it), then the token."""
            if kind != "chat":
                return prompt_ids or None
            await send([choice("", None, None, first=True)], prompt_ids)
            return None

        async def token(i: int) -> None:
            extra = await first_chunk() if i == 0 else None
            word = words[i]
            last = i == len(words) - 1
            await send([choice(word if i == 0 else " " + word, reason if last else None,
                               [_token_id(word)] if with_ids else None)], extra)

        await self._generate(job, len(words), token, engine)
        if not words:
            await send([choice("", reason, [] if with_ids else None)], await first_chunk())
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


def auth(api: Api) -> Any:
    """vLLM's AuthenticationMiddleware: with an API key, /v1/* needs `Authorization: Bearer KEY`;
    /health, /metrics and /version stay open."""

    @web.middleware
    async def check(req: web.Request, handler: Any) -> web.StreamResponse:
        if api.keys and req.method != "OPTIONS" and req.path.startswith("/v1"):
            scheme, _, token = req.headers.get("Authorization", "").partition(" ")
            digest = hashlib.sha256(token.encode()).digest()
            if scheme.lower() != "bearer" or digest not in api.keys:
                return web.json_response({"error": "Unauthorized"}, status=401)
        resp: web.StreamResponse = await handler(req)
        return resp

    return check


def build_app(api: Api) -> web.Application:
    app = web.Application(middlewares=[access_log, auth(api)])
    app.router.add_get("/health", api.health)
    app.router.add_get("/version", api.version)
    app.router.add_get("/v1/models", api.models)
    app.router.add_get("/metrics", api.metrics)
    app.router.add_post("/v1/completions", api.completions)
    app.router.add_post("/v1/chat/completions", api.chat)
    return app


def serve(args: argparse.Namespace, engine: EngineState, sock: socket.socket, host: str,
          started: float, logger: logging.Logger) -> int:
    try:
        api = Api(args, engine, logger)
    except ValueError as exc:  # scheduler.ConfigError: a DGXCLUSTER_STANDIN_* value
        logger.error("%s: %s", NAME, exc)
        engine.shutdown()
        return 2
    for line in api.describe():
        logger.info("%s", line)
    return asyncio.run(_run(build_app(api), api, sock, host, args.port, started, logger))


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
                api.engine.dead = f"a worker of the engine died: {type(exc).__name__}: {exc}"
                logger.error("EngineCore encountered a fatal error. (%s: %s)", NAME, api.engine.dead)
                logger.error("Engine core proc died unexpectedly, shutting down client.")
                code = 1
                await asyncio.sleep(2)  # /health answers 503 meanwhile, as vLLM's does
                stop.set()

    async def crash_after(seconds: float) -> None:
        nonlocal code
        await asyncio.sleep(seconds)
        logger.error("EngineCore encountered a fatal error. (%s: exit-after switch, %gs)",
                     NAME, seconds)
        api.engine.dead = "exit-after switch"
        code = 1
        stop.set()

    watcher = asyncio.create_task(watch())
    after = exit_after_s()
    crasher = asyncio.create_task(crash_after(after)) if after is not None else None
    await stop.wait()
    if crasher is not None:
        crasher.cancel()
    watcher.cancel()
    log.uvicorn("Shutting down")
    log.uvicorn("Waiting for application shutdown.")
    await runner.cleanup()
    log.uvicorn("Application shutdown complete.")
    log.uvicorn(f"Finished server process [{os.getpid()}]")
    await asyncio.to_thread(api.engine.shutdown)
    logger.info("%s: stopped", NAME)
    return code
