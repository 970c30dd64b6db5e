"""The stand-in as one rank of vLLM's multiprocessing executor across nodes, no Ray:

    vllm serve M -tp T -pp P --distributed-executor-backend mp --nnodes N --node-rank R \\
        --master-addr A --master-port Q [--headless]

What vLLM does (vllm/entrypoints/cli/serve.py `run_headless`, vllm/config/parallel.py,
vllm/v1/executor/multiproc_executor.py, vllm/distributed/parallel_state.py; release 0.20.1,
the same in 0.31.0): the configuration is checked first (`--nnodes` > 1 only with mp,
world size T x P divisible by N); rank 0 (the API server's engine) logs "DP group leader:
...", a `--headless` rank logs "Launching vLLM (vX) headless multiproc executor, with head
node address A:Q ..."; every worker logs "world_size=W rank=r ... distributed_init_method=
tcp://A:Q backend=nccl", joins the process group (dist.py) and then "rank r in world size W
is assigned as ...". Then the model loads on every rank and rank 0 serves the API. A rank
failing before that kills its node's vLLM ("WorkerProc failed to start."), and the others
fail at their next collective ("remote process exited or there was a network error").

Stand-in simplifications, said where they show: one process stands for a node's workers;
a lost peer is noticed at once (real ranks notice at their next collective; while idle, a
headless rank whose rank 0 stopped waits in its busy loop until stopped, as here); GPUs per
node come from DGXCLUSTER_STANDIN_GPUS (default 1, a DGX Spark); the process group's timeout
from DGXCLUSTER_STANDIN_DIST_TIMEOUT_S (default 600 s, torch's for NCCL groups).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys
import threading
from typing import Any

from vllm_standin import NAME, log
from vllm_standin.dist import DistError, Group
from vllm_standin.load import float_env, load_model

MP_BACKENDS = ("mp", "uni", "external_launcher")


def wanted(args: argparse.Namespace) -> bool:
    """vLLM's multiproc executor across nodes, or asked for by name (mp)."""
    return bool(args.headless) or args.nnodes > 1 or args.distributed_executor_backend == "mp"


def config_problem(args: argparse.Namespace) -> str | None:
    """What vLLM refuses before any rank starts, in its words (exception type first)."""
    world = args.tensor_parallel_size * args.pipeline_parallel_size
    backend = args.distributed_executor_backend
    if args.headless and args.api_server_count is not None and args.api_server_count > 0:
        return (f"ValueError: --api-server-count={args.api_server_count} cannot be used with "
                "--headless (no API servers are started in headless mode).")
    if args.nnodes > 1 and backend not in (None, *MP_BACKENDS):
        return ("ValueError: nnodes > 1 can only be set when distributed executor backend is "
                "mp, uni or external_launcher.")
    if world % args.nnodes:
        return (f"AssertionError: global world_size ({world}) must be divisible by "
                f"nnodes_within_dp ({args.nnodes}). ")
    if args.headless and args.node_rank == 0:
        return (f"ValueError: ({NAME}) --headless with --node-rank 0 and no data parallel "
                "(--data-parallel-size 1) is not emulated")
    if args.node_rank >= args.nnodes:
        return (f"ValueError: ({NAME}) --node-rank {args.node_rank} is not below --nnodes "
                f"{args.nnodes}")
    return None


class NativeEngine:
    """One node's ranks: join the group, pretend to load, stay up; `dead` once a peer left."""

    def __init__(self, args: argparse.Namespace, logger: logging.Logger) -> None:
        self.args = args
        self.log = logger
        self.world = args.tensor_parallel_size * args.pipeline_parallel_size
        self.group = Group(
            node_rank=args.node_rank, nnodes=args.nnodes, world_size=self.world,
            master_addr=args.master_addr, master_port=args.master_port,
            timeout_s=float_env("DGXCLUSTER_STANDIN_DIST_TIMEOUT_S", 600.0), log=logger,
            gloo_ifname=os.environ.get("GLOO_SOCKET_IFNAME") or None)
        self.dead: str | None = None
        self.loaded = False
        self.group.on_lost = self._peer_lost

    def workers(self) -> list[tuple[int, int, logging.Logger]]:
        """(global rank, local rank, its logger) for each worker of this node."""
        return [(r, i, log.process("Worker")) for i, r in enumerate(self.group.ranks)]

    def start(self) -> None:
        a = self.args
        gpus = int(float_env("DGXCLUSTER_STANDIN_GPUS", 1))
        for rank, local, wlog in self.workers():
            wlog.info("world_size=%d rank=%d local_rank=%d distributed_init_method=tcp://%s:%d "
                      "backend=nccl", self.world, rank, local, a.master_addr, a.master_port)
            if local >= gpus:
                raise DistError(f"torch.AcceleratorError: CUDA error: invalid device ordinal "
                                f"({NAME}: local rank {local}, {gpus} GPU(s) on this node; "
                                "DGXCLUSTER_STANDIN_GPUS)")
        self.group.join()
        tp = a.tensor_parallel_size
        for rank, _local, _w in self.workers():
            name = "Worker" + (f"_PP{rank // tp}" if a.pipeline_parallel_size > 1 else "") + \
                (f"_TP{rank % tp}" if tp > 1 else "")
            log.process(name).info(
                "rank %d in world size %d is assigned as DP rank 0, PP rank %d, PCP rank 0, "
                "TP rank %d, EP rank N/A, EPLB rank N/A", rank, self.world, rank // tp, rank % tp)
        self._load()
        self.loaded = True

    def _load(self) -> None:
        load_model(self.args.model, self.log, lambda: (
            "RuntimeError: NCCL error: remote process exited or there was a network error "
            f"({NAME}: {self.group.lost} left)") if self.group.lost else None)

    def _peer_lost(self, who: str) -> None:
        self.dead = f"{who} left the process group"
        if self.loaded and self.args.node_rank > 0:
            self.log.warning("%s: %s (rank 0 stopped?); like vLLM's headless worker, this rank "
                             "waits in its busy loop until it is stopped", NAME, self.dead)

    def check_alive(self) -> None:
        """Raise once a peer is gone: rank 0's engine fails at its next collective."""
        if self.group.lost:
            raise RuntimeError("NCCL error: remote process exited or there was a network error "
                               f"({self.group.lost} left)")

    def shutdown(self) -> None:
        self.group.close()


def main(args: argparse.Namespace, logger: logging.Logger, bind: Any) -> int:
    """One rank, from the configuration check to serving (rank 0) or waiting (headless)."""
    from vllm_standin import dp

    if dp.wanted(args):  # replicas behind the head's front end (dp.py)
        return dp.main(args, logger, bind)
    problem = config_problem(args)
    if problem:
        log.traceback(problem, f"vLLM {args.emulated_vllm} configuration checks")
        return 1
    a = args
    stop = threading.Event()

    def on_term(signum: int, _frame: object) -> None:
        logger.info("%s: received signal %d; exiting", NAME, signum)
        if not engine.loaded or a.node_rank == 0:
            engine.shutdown()
            sys.exit(0)
        stop.set()

    engine = NativeEngine(a, logger)
    signal.signal(signal.SIGTERM, on_term)
    if a.node_rank > 0:
        logger.info("Launching vLLM (v%s) headless multiproc executor, with head node address "
                    "%s:%d for torch.distributed process group.", a.emulated_vllm, a.master_addr,
                    a.master_port)
        served: tuple[socket.socket, str] | None = None
    else:
        served = bind()  # vLLM claims the API port before its engine starts
        logger.info("DP group leader: node_rank=%d, node_rank_within_dp=%d, master_addr=%s, "
                    "mq_connect_ip=%s (local), world_size=%d, local_world_size=%d", a.node_rank,
                    a.node_rank, a.master_addr, os.environ.get("VLLM_HOST_IP") or a.master_addr,
                    engine.world, engine.group.local_world_size)
    try:
        engine.start()
    except DistError as exc:
        engine.shutdown()
        for _rank, _local, wlog in engine.workers():
            wlog.error("WorkerProc failed to start.")
        log.traceback(str(exc), "vllm/v1/executor/multiproc_executor.py WorkerProc.worker_main")
        if a.node_rank == 0:
            logger.error("EngineCore failed to start.")
            log.traceback("RuntimeError: Engine core initialization failed. See root cause above. "
                       "Failed core proc(s): {'EngineCore_DP0': 1}", "vllm/v1/engine/utils.py")
        else:
            log.traceback("Exception: WorkerProc initialization failed due to an exception in a "
                       "background process. See stack trace for root cause.",
                       "vllm/v1/executor/multiproc_executor.py wait_for_ready")
        return 1
    if served is not None:
        from vllm_standin.api import serve

        sock, shown = served
        return serve(a, engine, sock, shown, a.started, logger)
    stop.wait()  # a headless rank serves no API: it waits for rank 0's work until stopped
    engine.shutdown()
    logger.info("%s: stopped", NAME)
    return 0
