"""The stand-in as one node of vLLM's multi-node data parallel ("internal load balancing"):
replicas (engines) behind the head's one API server, no Ray:

    head:   vllm serve M -dp D --data-parallel-size-local L --data-parallel-address A \\
                --data-parallel-rpc-port P
    others: ... --data-parallel-start-rank S --headless

What vLLM does (vllm/entrypoints/cli/serve.py `ServeSubcommand.cmd`, `run_headless`;
vllm/engine/arg_utils.py `create_engine_config`; vllm/v1/engine/utils.py
`launch_core_engines`, `wait_for_engine_startup`; docs/serving/data_parallel_deployment.md):
the head starts the DP coordinator and binds the engines' handshake socket at tcp://A:P; a
headless node logs "Launching L data parallel engine(s) in headless mode, with head node
address tcp://A:P." and its engines S..S+L-1 connect there. Each engine says HELLO, gets the
DP configuration back, loads the model and says READY; the head's API serves only once every
one of the D engines is READY. An engine index the head does not expect is refused ("Message
from engine with unexpected data parallel rank: N"). A non-head node with a start rank but
without `--headless` is vLLM's hybrid (or, with one local engine, external) load balancing:
an API server per node, which the stand-in does not emulate and refuses.

Stand-in simplifications, said where they show: the handshake is JSON lines over TCP (vLLM's
is ZMQ ROUTER/DEALER with msgpack), and the link stays open, standing for the DP group's
collectives: an engine that goes away is noticed at once (vLLM's engines notice at their
next DP collective) and takes the head down; a headless node whose head went away waits
until stopped, as vLLM's headless engines do. Replicas that span nodes (`--nnodes` with DP)
are not emulated. /metrics counts requests per engine under vLLM's `engine` label.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import logging
import os
import signal
import socket
import sys
import threading
import time
from typing import Any

from vllm_standin import NAME
from vllm_standin.dist import DistError
from vllm_standin.load import float_env, load_model

STARTUP_POLL_S = 10.0  # vLLM's STARTUP_POLL_PERIOD_MS
#: vLLM's engine core waits this long for the front end's answer to HELLO (core.py:
#: "Did not receive response from front-end process within 5 minutes").
HANDSHAKE_S = 300.0


def wanted(args: argparse.Namespace) -> bool:
    return int(args.data_parallel_size) > 1


def local_count(args: argparse.Namespace) -> int:
    """vLLM: --data-parallel-size-local, else the whole DP size on this node."""
    local = args.data_parallel_size_local
    return int(args.data_parallel_size if local is None else local)


def config_problem(args: argparse.Namespace) -> str | None:
    """What vLLM refuses (or the stand-in does not emulate) before any engine starts."""
    dp, local = args.data_parallel_size, local_count(args)
    start = args.data_parallel_start_rank or 0
    if args.headless and local <= 0:
        return "ValueError: data_parallel_size_local must be > 0 in headless mode"
    if args.headless and args.data_parallel_hybrid_lb:
        return "ValueError: data_parallel_hybrid_lb is not applicable in headless mode"
    if start and not args.headless:
        return (f"ValueError: ({NAME}) --data-parallel-start-rank {start} without --headless is "
                "vLLM's hybrid load balancing (or external, with one local engine): an API "
                "server on every node, which the stand-in does not emulate; the head of "
                "internal load balancing has no start rank, the other nodes run --headless")
    if args.data_parallel_external_lb or args.data_parallel_rank is not None:
        return f"ValueError: ({NAME}) external data-parallel load balancing is not emulated"
    if args.nnodes > 1:
        return (f"ValueError: ({NAME}) data parallel with --nnodes (replicas spanning nodes) is "
                "not emulated")
    if not args.headless and local > dp:
        return (f"ValueError: ({NAME}) --data-parallel-size-local {local} is more than "
                f"--data-parallel-size {dp}")
    gpus = int(float_env("DGXCLUSTER_STANDIN_GPUS", 1))
    need = local * args.tensor_parallel_size * args.pipeline_parallel_size
    if need > gpus:
        return (f"torch.AcceleratorError: CUDA error: invalid device ordinal ({NAME}: {local} "
                f"engine(s) x {need // local} GPU(s) on a node of {gpus} GPU(s); "
                "DGXCLUSTER_STANDIN_GPUS)")
    return None


def _send(sock: socket.socket, obj: dict[str, Any]) -> None:
    sock.sendall((json.dumps(obj) + "\n").encode())


def _lines(sock: socket.socket) -> Any:
    """The peer's messages, one dict each, until it closes (or resets) the link."""
    buf = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except OSError:
            return
        if not chunk:
            return
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            yield json.loads(line)


def _engine_log(index: int) -> logging.Logger:
    """An engine's lines carry vLLM's process prefix: `(EngineCore_DP1 pid=7) INFO ...`."""
    logger = logging.getLogger(f"vllm.engine.{index}")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter(
            f"(EngineCore_DP{index} pid=%(process)d) %(levelname)s %(asctime)s "
            "[%(module)s.py:%(lineno)d] %(message)s", "%m-%d %H:%M:%S"))
        logger.handlers[:] = [handler]
        logger.setLevel(logging.INFO)
        logger.propagate = False
    return logger


def _traceback(line: str, where: str) -> None:
    sys.stdout.write(f"Traceback (most recent call last):\n  ({where}, emulated by the {NAME})\n"
                     f"{line}\n")
    sys.stdout.flush()


def _closed(who: str) -> str:
    return (f"RuntimeError: [../third_party/gloo/gloo/transport/tcp/pair.cc:534] Connection "
            f"closed by peer [{who}] ({NAME}: the DP group lost it)")


class Engines:
    """This node's engines: load them (the head: and wait for every remote one)."""

    def __init__(self, args: argparse.Namespace, log: logging.Logger) -> None:
        self.args = args
        self.log = log
        self.local = local_count(args)
        self.start = args.data_parallel_start_rank or 0
        self.indexes = list(range(self.start, self.start + self.local))
        self.dead: str | None = None
        self.lost: str | None = None
        self.loaded = False
        self._links: list[socket.socket] = []
        self._server: socket.socket | None = None
        self._closing = False

    # -- both: the engines' own start-up -------------------------------------------------

    def _load(self) -> None:
        world = self.args.tensor_parallel_size * self.args.pipeline_parallel_size
        for i in self.indexes:
            _engine_log(i).info(
                "rank %d in world size %d is assigned as DP rank %d, PP rank 0, PCP rank 0, "
                "TP rank 0, EP rank N/A, EPLB rank N/A", i * world, world * self.args.data_parallel_size,
                i)
        load_model(self.args.model, _engine_log(self.indexes[0]),
                   lambda: _closed(self.lost) if self.lost else None)

    def _watch(self, sock: socket.socket, who: str) -> None:
        for _ in _lines(sock):
            pass
        if self._closing or self.lost is not None:
            return
        self.lost = who
        self.dead = f"the data-parallel engine at {who} went away"
        if self.loaded and self.args.headless:
            self.log.warning("%s: %s; like vLLM's headless engines, this node waits until it "
                             "is stopped", NAME, self.dead)

    def check_alive(self) -> None:
        """Raise once an engine of the DP group is gone: the head's fails at its next
        collective, and its API server with it."""
        if self.lost is not None:
            raise DistError(_closed(self.lost))

    def shutdown(self) -> None:
        self._closing = True
        for s in [*self._links, *([self._server] if self._server else [])]:
            with contextlib.suppress(OSError):
                s.close()

    # -- the head: DP coordinator, handshake socket, its own engines ----------------------

    def bind(self) -> None:
        a = self.args
        host = a.data_parallel_address or "127.0.0.1"
        port = a.data_parallel_rpc_port or 29550
        srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            srv.bind((host, port))
        except OSError as exc:
            srv.close()
            text = os.strerror(exc.errno or errno.EADDRINUSE)
            raise DistError(f"zmq.error.ZMQError: {text} (addr='tcp://{host}:{port}')") from None
        srv.listen(64)
        self._server = srv
        self.log.info("Started DP Coordinator process (PID: %d)", os.getpid())

    def head(self) -> None:
        """Load the local engines while the remote ones say HELLO and READY."""
        remote = [i for i in range(self.args.data_parallel_size) if i not in self.indexes]
        self.log.info("engines_to_handshake=%s", [f"CoreEngine(index={i}, local="
                                                  f"{i in self.indexes})" for i in
                                                  range(self.args.data_parallel_size)])
        ready: set[int] = set()
        failure: list[str] = []
        lock = threading.Condition()

        def accept() -> None:
            assert self._server is not None
            while not self._closing:
                try:
                    conn, peer = self._server.accept()
                except OSError:
                    return
                threading.Thread(target=engine, args=(conn, f"{peer[0]}:{peer[1]}"),
                                 daemon=True).start()

        def engine(conn: socket.socket, who: str) -> None:
            states: dict[int, str] = {}
            for msg in _lines(conn):
                index, status = int(msg["index"]), str(msg["status"])
                if index not in remote:
                    with lock:
                        failure.append(f"RuntimeError: Message from engine with unexpected data "
                                       f"parallel rank: {index}")
                        lock.notify_all()
                    conn.close()
                    return
                state = states.get(index, "NEW")
                if status == "HELLO" and state == "NEW":
                    _send(conn, {"init": {"data_parallel_master_ip": self.args.data_parallel_address,
                                          "data_parallel_size": self.args.data_parallel_size}})
                    states[index] = "CONNECTED"
                    self._links.append(conn)
                elif status == "READY" and state == "CONNECTED":
                    states[index] = "READY"
                    with lock:
                        ready.add(index)
                        lock.notify_all()
                else:
                    with lock:
                        failure.append(f"RuntimeError: Unexpected {status} message for remote "
                                       f"engine {index} in {state} state.")
                        lock.notify_all()
                    return
                self.log.debug("%s from remote core engine process %s.", status, index)
            if states and not self._closing and self.lost is None:
                self.lost = who
                self.dead = f"the data-parallel engine(s) {sorted(states)} at {who} went away"
                with lock:
                    lock.notify_all()

        threading.Thread(target=accept, daemon=True, name="dp-handshake").start()
        self._load()
        last = time.monotonic()
        with lock:
            while len(ready) < len(remote) and not failure and self.lost is None:
                lock.wait(1.0)
                if time.monotonic() - last >= STARTUP_POLL_S:
                    last = time.monotonic()
                    self.log.info("Waiting for %d local, %d remote core engine proc(s) to "
                                  "start.", 0, len(remote) - len(ready))
        if failure:
            raise DistError(failure[0])
        self.check_alive()
        self.loaded = True

    # -- a headless node: its engines join the head ----------------------------------------

    def headless(self) -> None:
        a = self.args
        address = f"tcp://{a.data_parallel_address}:{a.data_parallel_rpc_port or 29550}"
        self.log.info("Launching %d data parallel engine(s) in headless mode, with head node "
                      "address %s.", self.local, address)
        deadline = time.monotonic() + float_env("DGXCLUSTER_STANDIN_DP_HANDSHAKE_S", HANDSHAKE_S)
        while True:  # ZMQ connects in the background, retrying until the front end is there
            try:
                conn = socket.create_connection(
                    (a.data_parallel_address, a.data_parallel_rpc_port or 29550), timeout=5)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise DistError("RuntimeError: Did not receive response from front-end process "
                               "within 5 minutes") from None
                time.sleep(0.2)
        self._links.append(conn)
        for i in self.indexes:
            _send(conn, {"index": i, "status": "HELLO", "local": False})
        messages = _lines(conn)
        for _ in self.indexes:
            if next(messages, None) is None:
                raise DistError(_closed(address))
        threading.Thread(target=self._drain, args=(messages, address), daemon=True).start()
        self._load()
        for i in self.indexes:
            _send(conn, {"index": i, "status": "READY", "local": False})
        self.loaded = True

    def _drain(self, messages: Any, who: str) -> None:
        for _ in messages:
            pass
        if not self._closing and self.lost is None:
            self.lost = who
            self.dead = f"the head's front end at {who} went away"
            if self.loaded:
                self.log.warning("%s: %s; like vLLM's headless engines, this node waits until "
                                 "it is stopped", NAME, self.dead)


def main(args: argparse.Namespace, logger: logging.Logger, bind: Any) -> int:
    """The head (DP coordinator and API server) or a headless node's engines."""
    problem = config_problem(args)
    if problem:
        _traceback(problem, f"vLLM {args.emulated_vllm} configuration checks")
        return 1
    engines = Engines(args, logger)
    stop = threading.Event()

    def on_term(signum: int, _frame: object) -> None:
        logger.info("%s: received signal %d; exiting", NAME, signum)
        if not engines.loaded or not args.headless:
            engines.shutdown()
            sys.exit(0)
        stop.set()

    signal.signal(signal.SIGTERM, on_term)
    served = None
    try:
        if args.headless:
            engines.headless()
        else:
            served = bind()  # vLLM claims the API port before its engines start
            logger.info("Defaulting api_server_count to data_parallel_size (%d).",
                        args.data_parallel_size)
            engines.bind()
            engines.head()
    except DistError as exc:
        engines.shutdown()
        for i in engines.indexes:
            _engine_log(i).error("EngineCore failed to start.")
        _traceback(str(exc), "vllm/v1/engine/core.py EngineCoreProc.run_engine_core")
        if not args.headless:
            failed = {f"EngineCore_DP{i}": 1 for i in engines.indexes}
            _traceback(f"RuntimeError: Engine core initialization failed. See root cause above. "
                       f"Failed core proc(s): {failed}", "vllm/v1/engine/utils.py")
        return 1
    if served is not None:
        from vllm_standin.api import serve

        sock, shown = served
        return serve(args, engines, sock, shown, args.started, logger)
    stop.wait()  # headless: no API; its engines serve the head's requests until stopped
    engines.shutdown()
    logger.info("%s: stopped", NAME)
    return 0
