"""`serve.executor: native`: vLLM's own multiprocessing executor across nodes, no Ray.

    headless -> rank0 -> vllm-ready

Every node runs one container whose main process is `vllm serve` (under the launcher that
records its pid and exit status in the node's log folder): the other nodes first, in
parallel, with `--headless --node-rank R`; they wait for rank 0 at `--master-addr` (the
head's fabric IP) `:--master-port`. Then rank 0 on the head, which serves the API once every
rank joined the process group and the model is loaded (vllm/entrypoints/cli/serve.py
`run_headless`; docs/serving/parallelism_scaling.md "Running vLLM with MultiProcessing").

While rank 0 loads, every rank is watched: a rank whose vLLM exits ends the start at once,
naming its node with its last log lines. Ranks that exit together are blamed in the order
they exited (a rank that loses a peer fails too), so the first is the cause.

Nothing is restarted piecemeal: a process group cannot take a rank back, so anything
missing means every rank starts again.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING

from dgxcluster.core import docker, naming
from dgxcluster.core.docker import indented
from dgxcluster.core.progress import StatusThrottle
from dgxcluster.core.ranks import headless, node_ranks
from dgxcluster.core.stages import Stage
from dgxcluster.core.steps import Outcome, Status
from dgxcluster.errors import CommandTimeout, ConnectError, NodesFailed, StepError
from dgxcluster.facts import vllm_log
from dgxcluster.serving import plan, vllm

if TYPE_CHECKING:
    from dgxcluster.remote.connection import Connection
    from dgxcluster.serving.start import StartRun
    from dgxcluster.serving.vllm import ServeProbe

#: How often the headless ranks are probed while rank 0 loads (rank 0 itself: every round).
WATCH_S = 1.0


class NativeExecutor:
    name = plan.NATIVE

    def __init__(self) -> None:
        self.new: list[str] = []

    def stages(self) -> tuple[Stage[StartRun], ...]:
        return (Stage("headless", self.headless), Stage("rank0", self.rank0),
                Stage("vllm-ready", self.ready))

    def decide(self, run: StartRun) -> list[str]:
        """Every rank running this configuration: nothing to start. Anything else: all of
        them (rank 0 cannot take a rank back into its process group)."""
        if all(run.same(n) for n in run.inv.names):
            return []
        mine = run.mine(run.head)
        if mine is None or not mine.running:  # a running one of ours holds them; it goes first
            run.require_free_ports()
        self.new = list(run.inv.names)
        return self.new

    # -- stages --------------------------------------------------------------------------

    def headless(self, run: StartRun) -> None:
        nodes = headless(run.inv)
        if not self.new:
            for n in nodes:
                run.out(n, "headless", Status.UNCHANGED, "running, same config")
            return
        old = [c.name for c in run.facts[run.head].containers]
        if old:  # an old rank 0 must not take the new ranks in
            conn = run.s.cluster.conn(run.head)
            for name in old:
                run.p.status(run.head, f"headless: removing the old {name} first")
                docker.remove(conn, name)
            run.facts[run.head].containers = []
            run.out(run.head, "headless", Status.CHANGED, "removed " + ", ".join(old) +
                    " (rank 0 starts after the headless ranks)")
        run.create_on(nodes, "headless")

    def rank0(self, run: StartRun) -> None:
        if not self.new:
            run.out(run.head, "rank0", Status.UNCHANGED, "running, same config")
            return
        run.create_on([run.head], "rank0")
        paths = run.facts[run.head].paths
        run.report.outcomes[-1] = _with_log(run.report.outcomes[-1], paths.vllm_log)

    def ready(self, run: StartRun) -> None:
        watch = RankWatch(run)
        run.wait_ready(gate=watch, explain=watch.explain)


def _with_log(o: Outcome, log: str) -> Outcome:
    return Outcome(o.node, o.step, o.status, f"{o.detail}; `vllm serve` rank 0, log {log}")


class RankWatch:
    """The headless ranks while rank 0 loads: joined or not (the live line), alive or not."""

    def __init__(self, run: StartRun) -> None:
        self.run = run
        self.ranks = node_ranks(run.inv)
        self.nodes = headless(run.inv)
        self.live = StatusThrottle(run.p)
        self.t0 = time.monotonic()
        self.last = -math.inf

    def __call__(self) -> bool:
        """Called every round of the readiness wait; readiness itself is rank 0's HTTP."""
        now = time.monotonic()
        if not self.nodes or now - self.last < WATCH_S:
            return True
        self.last = now
        probes = self.probe(self.nodes)
        if any(_ended(p) for p in probes.values()):
            raise self.failure()
        for node, p in probes.items():
            phase = vllm_log.read_line(p.last_line)
            state = "joined" if p.joined else "joining"
            shown = f"{phase.detail}: {p.last_line[:70]}" if phase else p.last_line[:90]
            self.live.status(node, f"vllm-ready: rank {self.ranks[node]} {state}",
                             f"vllm-ready: rank {self.ranks[node]} {state} "
                             f"({now - self.t0:.0f}s): {shown}")
        return True

    def probe(self, nodes: list[str]) -> dict[str, ServeProbe]:
        inv = self.run.inv

        def one(conn: Connection) -> ServeProbe:
            name = naming.container_name(inv.cluster, plan.role_of(inv, conn.node))
            return vllm.probe(conn, inv, self.run.facts[conn.node].paths, name)

        group = self.run.s.cluster.map(one, nodes)
        for node, err in group.errors.items():
            if isinstance(err, ConnectError):
                raise err
            if isinstance(err, CommandTimeout):
                raise ConnectError(node, f"stopped answering while vLLM loaded: {err}")
            raise StepError("vllm-ready", str(err), node)
        return dict(group.values)

    def failure(self) -> BaseException:
        """Every rank that ended, the first to end first (it is the cause: the others
        fail because it left the process group), each with its last log lines."""
        probes = self.probe(self.run.inv.names)
        ended = sorted((n for n, p in probes.items() if _ended(p)),
                       key=lambda n: (probes[n].ended_at or math.inf, self.ranks[n]))
        errors: dict[str, BaseException] = {n: self._why(n, probes[n]) for n in ended}
        if len(errors) == 1:
            return errors[ended[0]]
        return NodesFailed("vllm-ready", errors)

    def explain(self, err: StepError) -> BaseException:
        """Rank 0's wait failed: blame the rank that ended first; on a timeout, say which
        ranks never joined."""
        probes = self.probe(self.run.inv.names)
        if any(_ended(p) for p in probes.values()):
            return self.failure()
        lines = [f"  {n} (rank {self.ranks[n]}): {'joined' if p.joined else 'NOT joined'}; "
                 f"last line: {p.last_line[:200]}" for n, p in probes.items()]
        return StepError(err.step, f"{err.message}\nranks:\n" + "\n".join(lines), err.node)

    def _why(self, node: str, p: ServeProbe) -> StepError:
        conn = self.run.s.cluster.conn(node)
        paths = self.run.facts[node].paths
        rank = self.ranks[node]
        if p.exit_code is None:
            name = naming.container_name(self.run.inv.cluster, plan.role_of(self.run.inv, node))
            tail = docker.log_tail(conn, name)
            return StepError("vllm-ready", f"vLLM rank {rank}'s container {name} is "
                             f"{p.container.status}; its last lines:\n{indented(tail)}", node)
        return StepError("vllm-ready", f"vLLM rank {rank} exited with status {p.exit_code}; "
                         f"last {vllm.TAIL_LINES} lines of {paths.vllm_log}:\n"
                         f"{indented(vllm.log_tail(conn, paths))}", node)


def _ended(p: ServeProbe) -> bool:
    return p.exit_code is not None or not p.container.running
