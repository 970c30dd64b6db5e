"""A data-parallel replica that spans nodes (`--nnodes` with `--data-parallel-size`), as vLLM
runs a dense model's replicas with its multiproc executor, no Ray:

    leader of replica r:  vllm serve M -tp T -dp D --data-parallel-size-local 1 ... --nnodes N
                              --node-rank R --master-addr LEADER --master-port Q
                              [--data-parallel-start-rank r --headless]
    its followers:        vllm serve M -tp T --nnodes k --node-rank j --master-addr LEADER
                              --master-port Q --headless   (native.py: no DP flag)

What vLLM does (read from the source of releases 0.20.1, 0.28.0 and 0.31.0; NOT run on a real
cluster): vllm/engine/arg_utils.py `create_engine_config` checks that `--nnodes` divides the
world of every replica (DP x TP x PP) and that the node rank is below it, and infers the
data-parallel rank (logged: "Inferred data_parallel_rank D from node_rank R"); the node's
place in its replica is `node_rank % nnodes_within_dp`, nnodes_within_dp = nnodes // (DP //
DP_local) (vllm/config/parallel.py). vllm/entrypoints/cli/serve.py `run_headless` runs a
follower's workers (node_rank_within_dp > 0) and, on a leader, the replica's engine, which
joins the head's DP handshake (dp.py). A dense engine is an independent DP-1 engine
(vllm/v1/engine/core.py `run_engine_core`); from 0.28.0 it also re-scopes `--nnodes` and
`--node-rank` to its replica (`reconfigure_for_independent_dp_rank`), before that it keeps
them. Its executor (vllm/v1/executor/multiproc_executor.py) asserts that the replica's world
divides over those nodes, logs "DP group leader: ..." and its workers form the replica's
process group at `--master-addr:--master-port` (vllm/distributed/parallel_state.py), which
dist.py emulates: so each replica needs its own leader's address there.

What is refused, in vLLM's words (0.31.0's texts from 0.31 on, 0.20.1's before; the releases
between were not compared): a `--nnodes` that does not divide the world, a node rank out of
range, nodes that do not divide into the replicas, a world the engine's nodes do not divide.
Stand-in simplifications, said where they show: what vLLM does not refuse but cannot run is
refused here with the reason (a follower given DP flags joins as a rank of every replica's
world, DP x TP x PP, while its leader's engine forms its replica's alone; an engine whose
re-scoped rank is not its group's leader; rank 0's `--master-addr` naming another host, where
torch's store client would join that host's group); a lost follower takes its leader's engine
down at once (vLLM: at its next collective), and a headless leader's node then exits.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import logging
import os
import socket
import sys

from vllm_standin import NAME, log
from vllm_standin.dist import DistError, Group
from vllm_standin.load import float_env

#: vLLM 0.28.0 added ParallelConfig.reconfigure_for_independent_dp_rank.
RESCOPED_FROM = (0, 28)
#: vLLM 0.31.0's arg_utils words these refusals as ValueErrors (0.20.1: assertions).
VALUE_ERRORS_FROM = (0, 31)


def _release(args: argparse.Namespace) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in str(args.emulated_vllm).split(".")[:2])
    except ValueError:
        return (0, 0)


def _local(args: argparse.Namespace) -> int:
    local = args.data_parallel_size_local
    return int(args.data_parallel_size if local is None else local)


def within_dp(args: argparse.Namespace) -> int:
    """vLLM's nnodes_within_dp: the nodes one replica spans."""
    return int(args.nnodes // (args.data_parallel_size // max(_local(args), 1)))


def engine_nodes(args: argparse.Namespace) -> tuple[int, int]:
    """(nnodes, node_rank) the dense engine's executor sees once its DP fields are reset."""
    if _release(args) >= RESCOPED_FROM:
        within = within_dp(args)
        return within, args.node_rank % within
    return args.nnodes, args.node_rank


def problem(args: argparse.Namespace) -> str | None:
    """What vLLM refuses with --nnodes and data parallel (or cannot run), before any rank starts."""
    dp, n, r = args.data_parallel_size, args.nnodes, args.node_rank
    replica = args.tensor_parallel_size * args.pipeline_parallel_size
    world, new = dp * replica, _release(args) >= VALUE_ERRORS_FROM
    if world % n:
        return ("ValueError: Invalid data-parallel launch options: "
                f"`--nnodes {n}` must evenly divide the total world size ({world}). Adjust "
                "`--nnodes`, `--data-parallel-size`, `--pipeline-parallel-size`, "
                "`--tensor-parallel-size`, or `--prefill-context-parallel-size`." if new else
                f"AssertionError: world_size={world} must be divisible by nnodes={n}.")
    if not 0 <= r < n:
        return ("ValueError: Invalid data-parallel launch options: `--node-rank` must be "
                f"between 0 and {n - 1}; got `--node-rank {r}`. Set it to this node's "
                "zero-based index." if new else
                f"AssertionError: node_rank={r} must be less than nnodes={n}.")
    local = _local(args)
    groups = dp // local
    if new and n % groups:
        return ("ValueError: Invalid data parallel configuration: "
                f"nnodes ({n}) must be divisible by the number of data parallel node groups "
                f"({groups} = data_parallel_size {dp} / data_parallel_size_local {local})")
    within = within_dp(args)
    if within == 0:
        return "ZeroDivisionError: integer modulo by zero"
    if r % within:
        rank = (args.data_parallel_start_rank or 0) * replica + replica // within * (r % within)
        return (f"RuntimeError: ({NAME}) node rank {r} is a follower in its replica "
                f"(node_rank_within_dp {r % within}) but has data-parallel flags: vLLM's "
                f"run_headless starts its workers as rank {rank} of world_size {world} "
                f"(world_size_across_dp) while its leader's dense engine forms a world of "
                f"{replica}, so the process group cannot form; run it as --nnodes {within} "
                f"--node-rank {r % within} without data-parallel flags")
    nn, nr = engine_nodes(args)
    if replica % nn:
        return (f"AssertionError: global world_size ({replica}) must be divisible by "
                f"nnodes_within_dp ({nn}). ")
    if nr % nn:
        return (f"RuntimeError: ({NAME}) the dense engine's executor sees node rank {nr} of "
                f"{nn} (vLLM {args.emulated_vllm} keeps --nnodes/--node-rank on an independent "
                "DP engine): not its group's leader, so no engine runs; not emulated")
    gpus = int(float_env("DGXCLUSTER_STANDIN_GPUS", 1))
    if local * (replica // nn) > gpus:
        return (f"torch.AcceleratorError: CUDA error: invalid device ordinal ({NAME}: "
                f"{replica // nn} worker(s) of the engine on a node of {gpus} GPU(s); "
                "DGXCLUSTER_STANDIN_GPUS)")
    return None


def _is_local(address: str) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((address, 0))
        except OSError as exc:
            return exc.errno != errno.EADDRNOTAVAIL
    return True


class Replica:
    """The leader's engine's process group: its workers here and its followers' (dist.py)."""

    def __init__(self, args: argparse.Namespace, logger: logging.Logger, index: int) -> None:
        self.args = args
        self.index = index
        self.headless = bool(args.headless)
        self.nnodes, self.node_rank = engine_nodes(args)
        self.world = args.tensor_parallel_size * args.pipeline_parallel_size
        self.loaded = False
        self.group = Group(
            node_rank=self.node_rank, nnodes=self.nnodes, world_size=self.world,
            master_addr=args.master_addr, master_port=args.master_port,
            timeout_s=float_env("DGXCLUSTER_STANDIN_DIST_TIMEOUT_S", 600.0), log=logger,
            gloo_ifname=os.environ.get("GLOO_SOCKET_IFNAME") or None)
        self.group.on_lost = self._lost

    def join(self) -> None:
        """Form the replica's group (raise DistError as torch would fail)."""
        a, g = self.args, self.group
        engine = log.process(f"EngineCore_DP{self.index}")
        engine.info("DP group leader: node_rank=%d, node_rank_within_dp=%d, master_addr=%s, "
                    "mq_connect_ip=%s (local), world_size=%d, local_world_size=%d",
                    self.node_rank, 0, a.master_addr,
                    os.environ.get("VLLM_HOST_IP") or a.master_addr, self.world,
                    g.local_world_size)
        for local, rank in enumerate(g.ranks):
            log.process("Worker").info(
                "world_size=%d rank=%d local_rank=%d distributed_init_method=tcp://%s:%d "
                "backend=nccl", self.world, rank, local, a.master_addr, a.master_port)
        if not _is_local(a.master_addr):
            raise DistError(f"RuntimeError: ({NAME}) this engine's rank 0 hosts torch's TCP "
                            f"store on port {a.master_port} here, but --master-addr "
                            f"{a.master_addr} is another host: its store client would join "
                            "that host's group (one address for every replica puts their "
                            "ranks in one store, vLLM PR 39405); not emulated")
        g.join()

    def lost(self) -> str | None:
        """Why the engine's next collective fails, once a follower is gone."""
        if self.group.lost:
            return ("RuntimeError: NCCL error: remote process exited or there was a network "
                    f"error ({NAME}: {self.group.lost} of replica {self.index} left)")
        return None

    def _lost(self, who: str) -> None:
        if self.loaded and self.headless:  # the engine dies; run_headless's node goes with it
            log.process(f"EngineCore_DP{self.index}").error(
                "EngineCore encountered a fatal error. (%s: %s of replica %d left)", NAME, who,
                self.index)
            sys.stdout.flush()
            os._exit(1)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.group.close()
