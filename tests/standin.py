"""The vLLM stand-in's HTTP API without Ray: built in-process for unit tests, or served on
loopback (`python -m tests.standin --port N --model M`) for tests that drive it with real
clients such as llama-benchy. The engine side (Ray, placement group) is replaced by a no-op;
everything else (pacing, /metrics, SSE) is the stand-in's own code.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import selectors
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

REPO = Path(__file__).resolve().parents[1]
STANDIN = REPO / "images" / "testbed" / "standin"


def modules() -> tuple[ModuleType, ModuleType, ModuleType]:
    """(api, scheduler, metrics) of the stand-in; they need aiohttp and prometheus_client."""
    if str(STANDIN) not in sys.path:
        sys.path.insert(0, str(STANDIN))
    from vllm_standin import api, metrics, scheduler

    return api, scheduler, metrics


class NoEngine:
    """The engine side with nothing behind it: alive until told otherwise."""

    dead: str | None = None

    def check_alive(self) -> None:
        return None

    def shutdown(self) -> None:
        return None


def make_api(model: str = "m", served: list[str] | None = None, max_model_len: int = 4096,
             api_key: list[str] | None = None, max_num_seqs: int | None = None) -> Any:
    api, _, _ = modules()
    args = argparse.Namespace(model=model, served_model_name=served, max_model_len=max_model_len,
                              api_key=api_key, max_num_seqs=max_num_seqs, port=0)
    from vllm_standin import log

    return api.Api(args, NoEngine(), log.setup())


class _NoIO(selectors.BaseSelector):
    """A selector with nothing to wait for: `select(timeout)` moves the loop's clock instead."""

    def __init__(self, loop: VirtualTimeLoop) -> None:
        self._loop = loop
        self._keys: dict[int, selectors.SelectorKey] = {}

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        fd = fileobj if isinstance(fileobj, int) else fileobj.fileno()
        key = selectors.SelectorKey(fileobj, fd, events, data)
        self._keys[fd] = key
        return key

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        fd = fileobj if isinstance(fileobj, int) else fileobj.fileno()
        return self._keys.pop(fd)

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        if timeout is None:
            raise RuntimeError("virtual time: every task waits and no timer is set (deadlock)")
        self._loop.virtual_now += max(0.0, timeout)
        return []

    def get_map(self) -> dict[int, selectors.SelectorKey]:  # type: ignore[override]
        return self._keys


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An event loop on virtual time: sleeps take no wall time, so rates can be asserted
    exactly in unit tests (asyncio.sleep and loop.time() both follow the virtual clock)."""

    def __init__(self) -> None:
        self.virtual_now = 0.0
        super().__init__(selector=_NoIO(self))

    def time(self) -> float:
        return self.virtual_now


def run_virtual(coro: Any) -> Any:
    loop = VirtualTimeLoop()
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def loopback(env: dict[str, str] | None = None, model: str = "org/m",
             log: Path | None = None) -> Iterator[str]:
    """The stand-in's API served by a child process on 127.0.0.1; yields its root URL."""
    port = free_port()
    out = open(log, "w") if log else subprocess.DEVNULL  # noqa: SIM115 - closed below
    proc = subprocess.Popen([sys.executable, "-m", "tests.standin", "--port", str(port),
                             "--model", model], cwd=str(REPO), env={**os.environ, **(env or {})},
                            stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the stand-in did not start on {url}") from None
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if log:
            out.close()  # type: ignore[union-attr]


def main(argv: list[str]) -> int:
    from aiohttp import web

    p = argparse.ArgumentParser(description="serve the vLLM stand-in's API on loopback, no Ray")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (a testbed node's, for benchmarks/watch)")
    p.add_argument("--model", default="m")
    p.add_argument("--max-model-len", type=int, default=32768)
    p.add_argument("--max-num-seqs", type=int, default=None)
    a = p.parse_args(argv)
    api_mod, _, _ = modules()
    api = make_api(a.model, max_model_len=a.max_model_len, max_num_seqs=a.max_num_seqs)
    for line in api.describe():
        print(line, flush=True)
    web.run_app(api_mod.build_app(api), host=a.host, port=a.port, print=None,
                access_log=None)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
