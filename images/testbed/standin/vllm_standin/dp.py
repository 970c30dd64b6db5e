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

A dense (non-MoE) model's replicas are independent engines (vllm/v1/engine/core.py
`run_engine_core`: "Non-MoE DP ranks are completely independent, so treat like DP=1"): no
collective ties them, so nothing takes the head down when a remote engine dies. While the
head waits for the engines it watches only its local ones and the coordinator, with no
timeout ("Waiting for %d local, %d remote core engine proc(s) to start.", logged every
10 s, at DEBUG in vLLM, at INFO here so the wait shows): a replica that dies while loading
leaves the head waiting. Once serving, the front end keeps routing to a dead remote engine
by its last reported load, and requests sent there get no answer (NOT verified against a
real cluster: read from the code, which has no liveness check for remote engines).

Stand-in simplifications, said where they show: the handshake is JSON lines over TCP (vLLM's
is ZMQ ROUTER/DEALER with msgpack); a lost link marks the engine gone at once; a headless
node whose head went away waits until stopped. MoE lockstep (DPEngineCoreProc, dummy
batches) and `--data-parallel-size-local 0` are not emulated. A replica that spans nodes
(`--nnodes` with DP) is span.py's: its leader's engine forms the replica's process group with
its followers (dist.py) before it loads, then joins the handshake as any engine. /metrics
has one series per engine under vLLM's `engine` label; the head picks the engine with the
fewest waiting x 4 + running requests, ties in turn.
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

from vllm_standin import NAME, log, span
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
    if args.nnodes > 1:  # replicas spanning nodes: span.py
        return span.problem(args)
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


class Engines:
    """This node's engines: load them (the head: and wait for every remote one)."""

    def __init__(self, args: argparse.Namespace, log: logging.Logger) -> None:
        self.args = args
        self.log = log
        self.local = local_count(args)
        self.start = args.data_parallel_start_rank or 0
        self.indexes = list(range(self.start, self.start + self.local))
        self.dead: str | None = None  # the API's view: never set by a remote engine's loss
        #: remote engines whose link closed (the head), or the head's address (headless)
        self.gone: set[int] = set()
        self.head_gone: str | None = None
        self.loaded = False
        self._links: list[socket.socket] = []
        self._server: socket.socket | None = None
        self._closing = False
        #: a replica spanning nodes: its leader engine's process group (span.py)
        self.replica = span.Replica(args, log, self.indexes[0]) if args.nnodes > 1 else None

    @property
    def lost_engines(self) -> set[int]:
        """Engines the front end still routes to whose requests get no answer."""
        return set(self.gone)

    def _load(self) -> None:
        # an independent (dense) engine's group is its own: DP rank 0 of DP 1 (core.py)
        world = self.args.tensor_parallel_size * self.args.pipeline_parallel_size
        replica = self.replica
        if replica is not None:  # its followers' workers join first (span.py)
            replica.join()
        for i in self.indexes:
            log.process(f"EngineCore_DP{i}").info(
                "rank 0 in world size %d is assigned as DP rank 0, PP rank 0, PCP rank 0, "
                "TP rank 0, EP rank N/A, EPLB rank N/A", world)
        load_model(self.args.model, log.process(f"EngineCore_DP{self.indexes[0]}"),
                   replica.lost if replica is not None else lambda: None)
        if replica is not None:
            replica.loaded = True

    def check_alive(self) -> None:
        """The API's liveness watch: local engines only (a remote one's loss goes unseen); the
        head's own replica's engine fails once a follower of it is gone."""
        why = self.replica.lost() if self.replica is not None else None
        if why:
            raise RuntimeError(why.split(": ", 1)[1])

    def shutdown(self) -> None:
        self._closing = True
        if self.replica is not None:
            self.replica.close()
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
        """Load the local engines while the remote ones say HELLO and READY; return once
        every engine is READY (vLLM waits for them without a timeout)."""
        dp = self.args.data_parallel_size
        self.remote = [i for i in range(dp) if i not in self.indexes]
        self.log.info("engines_to_handshake=%s", [
            f"CoreEngine(index={i}, local={i in self.indexes})" for i in range(dp)])
        self.ready: set[int] = set()
        self.failure: list[str] = []
        self.cond = threading.Condition()
        threading.Thread(target=self._accept, daemon=True, name="dp-handshake").start()
        self._load()
        last = time.monotonic()
        with self.cond:
            while len(self.ready) < len(self.remote) and not self.failure:
                self.cond.wait(1.0)
                if time.monotonic() - last >= STARTUP_POLL_S:
                    last = time.monotonic()
                    self.log.info("Waiting for %d local, %d remote core engine proc(s) to "
                                  "start.", 0, len(self.remote) - len(self.ready))
        if self.failure:
            raise DistError(self.failure[0])
        self.loaded = True

    def _accept(self) -> None:
        assert self._server is not None
        while not self._closing:
            try:
                conn, _peer = self._server.accept()
            except OSError:
                return
            threading.Thread(target=self._engine_link, args=(conn,), daemon=True).start()

    def _fail(self, message: str) -> None:
        with self.cond:
            self.failure.append(message)
            self.cond.notify_all()

    def _engine_link(self, conn: socket.socket) -> None:
        """One remote node's engines: HELLO, READY, then the link stands for the engine."""
        states: dict[int, str] = {}
        for msg in _lines(conn):
            index, status = int(msg["index"]), str(msg["status"])
            state = states.get(index, "NEW")
            if index not in self.remote:
                self._fail(f"RuntimeError: Message from engine with unexpected data parallel "
                           f"rank: {index}")
                conn.close()
                return
            if status == "HELLO" and state == "NEW":
                _send(conn, {"init": {"data_parallel_master_ip": self.args.data_parallel_address,
                                      "data_parallel_size": self.args.data_parallel_size}})
                states[index] = "CONNECTED"
                self._links.append(conn)
            elif status == "READY" and state == "CONNECTED":
                states[index] = "READY"
                with self.cond:
                    self.ready.add(index)
                    self.cond.notify_all()
            else:
                self._fail(f"RuntimeError: Unexpected {status} message for remote engine "
                           f"{index} in {state} state.")
                return
        if not self._closing:
            self.gone.update(states)

    # -- a headless node: its engines join the head ----------------------------------------

    def headless(self) -> None:
        a = self.args
        port = a.data_parallel_rpc_port or 29550
        address = f"tcp://{a.data_parallel_address}:{port}"
        self.log.info("Launching %d data parallel engine(s) in headless mode, with head node "
                      "address %s.", self.local, address)
        deadline = time.monotonic() + float_env("DGXCLUSTER_STANDIN_DP_HANDSHAKE_S", HANDSHAKE_S)
        while True:  # ZMQ connects in the background, retrying until the front end is there
            try:
                conn = socket.create_connection((a.data_parallel_address, port), timeout=5)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise DistError("RuntimeError: Did not receive response from front-end "
                                    "process within 5 minutes") from None
                time.sleep(0.2)
        conn.settimeout(None)
        self._links.append(conn)
        for i in self.indexes:
            _send(conn, {"index": i, "status": "HELLO", "local": False})
        messages = _lines(conn)
        for _ in self.indexes:
            if next(messages, None) is None:
                raise DistError(f"RuntimeError: ({NAME}) the front end at {address} closed the "
                                "handshake")
        threading.Thread(target=self._watch_head, args=(messages, address), daemon=True).start()
        self._load()
        with contextlib.suppress(OSError):  # a head that left is seen by the watch
            for i in self.indexes:
                _send(conn, {"index": i, "status": "READY", "local": False})
        self.loaded = True

    def _watch_head(self, messages: Any, who: str) -> None:
        for _ in messages:
            pass
        if not self._closing:
            self.head_gone = who
            self.log.warning("%s: the head's front end at %s went away; like vLLM's headless "
                             "engines, this node waits until it is stopped", NAME, who)


def main(args: argparse.Namespace, logger: logging.Logger, bind: Any) -> int:
    """The head (DP coordinator and API server) or a headless node's engines."""
    problem = config_problem(args)
    if problem:
        log.traceback(problem, f"vLLM {args.emulated_vllm} configuration checks")
        return 1
    if args.nnodes > 1:  # vllm/engine/arg_utils.py, internal load balancing with --nnodes
        logger.info("Inferred data_parallel_rank %d from node_rank %d",
                    args.data_parallel_start_rank or 0, args.node_rank)
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
            log.process(f"EngineCore_DP{i}").error("EngineCore failed to start.")
        log.traceback(str(exc), "vllm/v1/engine/core.py EngineCoreProc.run_engine_core")
        if not args.headless:
            failed = {f"EngineCore_DP{i}": 1 for i in engines.indexes}
            log.traceback(f"RuntimeError: Engine core initialization failed. See root cause above. "
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
