"""`vllm serve MODEL [options]`, parsed with vLLM's own argument table (an unknown flag fails as in vLLM)."""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import signal
import socket
import sys
import time
from typing import Any

from vllm_standin import NAME, VERSION, log

# vLLM's `vllm serve` argument table and the stdlib module that rebuilds its parser, staged
# here by images/testbed/stage-vllm-cli from dgxcluster/vllmcli/snapshots (the same snapshot
# dgxcluster validates inventory flags against) and dgxcluster/nodeside/vllm_argparse.py.
CLI_DIR = os.environ.get("DGXCLUSTER_STANDIN_VLLM_CLI") or os.path.join(
    os.path.dirname(os.path.dirname(os.path.realpath(__file__))), "vllm_cli")


def _table() -> tuple[Any, dict[str, Any]]:
    path = os.path.join(CLI_DIR, "table.json")
    if not os.path.isfile(path):
        sys.stderr.write(f"{NAME}: {path} is missing: the image was built without "
                         "images/testbed/stage-vllm-cli (run images/testbed/fetch-wheels)\n")
        sys.exit(1)
    sys.path.insert(0, CLI_DIR)
    import vllm_argparse

    with open(path) as fh:
        return vllm_argparse, json.load(fh)


def parse(argv: list[str]) -> argparse.Namespace:
    """`vllm ARGV` as vLLM's parser reads it: an unknown or malformed flag exits 2 with vLLM's
    usage and message; what vLLM's `validate` refuses exits 1 with its TypeError."""
    argparse_mod, table = _table()
    if argv[:1] in (["-v"], ["--version"]):
        sys.stdout.write(f"{table['vllm_version']}\n")
        sys.exit(0)
    top, serve = argparse_mod.build(table)
    args = top.parse_args(argparse_mod.preprocess(argv))
    if args.subparser != "serve":
        top.error(f"the {NAME} emulates `vllm serve` only")
    for message in argparse_mod.validate_messages(table, args):
        sys.stderr.write(f"Traceback (most recent call last):\n  (vLLM {table['vllm_version']} "
                         f"validate_parsed_serve_args, emulated by the {NAME})\nTypeError: {message}\n")
        sys.exit(1)
    if getattr(args, "model_tag", None):
        args.model = args.model_tag  # as ServeSubcommand.cmd does
    args.emulated_vllm = table["vllm_version"]
    args.non_default = {k: v for k, v in vars(args).items()
                        if k not in ("subparser", "emulated_vllm") and v != serve.get_default(k)}
    return args


def main(argv: list[str]) -> int:
    started = time.time()
    args = parse(argv)
    args.started = started
    logger = log.setup()
    logger.info("%s %s: a test double for `vllm serve` (no model is loaded, no GPU is used)",
                NAME, VERSION)
    logger.info("%s: process started at %s (epoch %.3f) pid %d", NAME,
                time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)), started, os.getpid())
    logger.info("%s: command line parsed with vLLM %s's argument table", NAME, args.emulated_vllm)
    logger.info("non-default args: %s", args.non_default)
    from vllm_standin import native

    if native.wanted(args):  # vLLM's own executor across nodes: no Ray
        return native.main(args, logger, lambda: _bind(args))
    sock, shown = _bind(args)

    def on_term(signum: int, _frame: object) -> None:
        logger.info("%s: received signal %d while starting; exiting", NAME, signum)
        sys.exit(0)

    signal.signal(signal.SIGTERM, on_term)
    from vllm_standin.engine import Engine

    engine = Engine(args, logger)
    engine.start()
    from vllm_standin.api import serve

    return serve(args, engine, sock, shown, started, logger)


def _bind(args: argparse.Namespace) -> tuple[socket.socket, str]:
    """Like vLLM, claim the API port before the engine starts (connections are refused until
    ready), on an IPv6 socket only for an IPv6 --host (vLLM's create_server_socket): 0.0.0.0
    is IPv4 only, `::` takes both on Linux. Returns the socket and the address as shown."""
    host = args.host or "0.0.0.0"
    v6 = _is_ipv6(host)
    sock = socket.socket(socket.AF_INET6 if v6 else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, args.port))
    return sock, f"[{host}]" if v6 else host  # as vLLM and uvicorn print an IPv6 listen address


def _is_ipv6(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).version == 6
    except ValueError:
        return False
