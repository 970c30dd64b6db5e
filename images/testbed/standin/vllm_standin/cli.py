"""`vllm serve MODEL [options]`: the arguments dgxcluster passes, parsed as vLLM does."""

from __future__ import annotations

import argparse
import ipaddress
import os
import signal
import socket
import sys
import time

from vllm_standin import NAME, VERSION, log


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vllm", description=f"{NAME}: a test double for vllm serve")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve", help="serve a model over the OpenAI-compatible API (stand-in)")
    s.add_argument("model")
    s.add_argument("--tensor-parallel-size", "-tp", type=int, default=1)
    s.add_argument("--pipeline-parallel-size", "-pp", type=int, default=1)
    s.add_argument("--distributed-executor-backend", choices=["ray", "mp", "uni", "external_launcher"])
    s.add_argument("--host", default=None)
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--max-model-len", type=int, default=None)
    s.add_argument("--gpu-memory-utilization", type=float, default=0.9)
    s.add_argument("--served-model-name", nargs="+", default=None)
    s.add_argument("--revision", default=None)
    s.add_argument("--trust-remote-code", action="store_true")
    s.add_argument("--dtype", default="auto")
    s.add_argument("--api-key", default=None)
    p.add_argument("--version", action="version", version=f"{VERSION} ({NAME})")
    return p


def main(argv: list[str]) -> int:
    started = time.time()
    args, unknown = parser().parse_known_args(argv)
    logger = log.setup()
    logger.info("%s %s: a test double for `vllm serve` (no model is loaded, no GPU is used)",
                NAME, VERSION)
    logger.info("%s: process started at %s (epoch %.3f) pid %d", NAME,
                time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)), started, os.getpid())
    logger.info("non-default args: %s", {k: v for k, v in vars(args).items() if v not in (None, False)})
    if unknown:
        logger.warning("%s: ignoring arguments it does not emulate: %s", NAME, " ".join(unknown))
    host = args.host or "0.0.0.0"
    # Like vLLM, claim the port before the engine starts (connections are refused until ready),
    # on an IPv6 socket only for an IPv6 --host (vLLM's create_server_socket): 0.0.0.0 is
    # IPv4 only, `::` takes both on Linux.
    v6 = _is_ipv6(host)
    sock = socket.socket(socket.AF_INET6 if v6 else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, args.port))
    shown = f"[{host}]" if v6 else host  # as vLLM and uvicorn print an IPv6 listen address

    def on_term(signum: int, _frame: object) -> None:
        logger.info("%s: received signal %d while starting; exiting", NAME, signum)
        sys.exit(0)

    signal.signal(signal.SIGTERM, on_term)
    from vllm_standin.engine import Engine

    engine = Engine(args, logger)
    engine.start()
    from vllm_standin.api import serve

    return serve(args, engine, sock, shown, started, logger)


def _is_ipv6(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).version == 6
    except ValueError:
        return False
