"""`serve.executor: ray`: a Ray cluster in containers, then `vllm serve
--distributed-executor-backend ray` launched in the head's.

    ray-head -> ray-workers -> ray-ready -> vllm -> vllm-ready

The workers start once the head's `ray start` printed "Ray runtime started.": Ray prints it
only after the head node registered in its GCS (`ray/_private/node.py` waits for its own node
info first), and a worker's `ray start` looks the head node up in the GCS a limited number
of times (`get_all_node_info_until_retrieved`, 20 tries 2 s apart) before it gives up with
"No node info found for head node in GCS". Starting them when the GCS port merely listened
lost that race on a loaded machine.

Only what is missing is started again: a worker gone is restarted alone; vLLM gone from a
running head is launched again.
"""

from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING

from dgxcluster.core import naming
from dgxcluster.core.stages import Stage
from dgxcluster.core.steps import Outcome, Status
from dgxcluster.facts.ray_status import RayStatus
from dgxcluster.serving import plan, raywait, vllm

if TYPE_CHECKING:
    from dgxcluster.serving.start import StartRun


class RayExecutor:
    name = plan.RAY

    def __init__(self) -> None:
        self.head_new = True
        self.workers_new: list[str] = []
        self._confirm: Future[RayStatus | None] = Future()
        self._confirm.set_result(None)
        self._reported = False
        self._at = 0
        self._t0 = 0.0

    def stages(self) -> tuple[Stage[StartRun], ...]:
        return (Stage("ray-head", self.ray_head), Stage("ray-workers", self.ray_workers),
                Stage("ray-ready", self.ray_ready), Stage("vllm", self.vllm))

    def decide(self, run: StartRun) -> list[str]:
        """The head again if it is not running this configuration (then every worker, which
        must join the new head); otherwise only the workers that are not."""
        self.head_new = not run.same(run.head)
        self.workers_new = [n for n in run.inv.names
                            if n != run.head and (self.head_new or not run.same(n))]
        if self.head_new:
            run.require_free_ports()
        run.on_failure.append(lambda: self._unconfirmed(run))
        return ([run.head] if self.head_new else []) + self.workers_new

    # -- stages --------------------------------------------------------------------------

    def ray_head(self, run: StartRun) -> None:
        if not self.head_new:
            run.out(run.head, "ray-head", Status.UNCHANGED, "running, same config")
            return
        conn = run.s.cluster.conn(run.head)
        o = run.create(conn, "ray-head")
        run.p.status(run.head, "ray-head: waiting for Ray to start")
        waited = raywait.wait_head(conn, naming.container_name(run.inv.cluster, plan.HEAD),
                                   run.inv.ray.start_timeout_s)
        run.report.outcomes.append(Outcome(o.node, o.step, o.status,
                                           f"{o.detail}; Ray started after {waited:.1f}s"))

    def ray_workers(self, run: StartRun) -> None:
        for n in run.inv.names:
            if n != run.head and n not in self.workers_new:
                run.out(n, "ray-workers", Status.UNCHANGED, "running, same config")
        run.create_on(self.workers_new, "ray-workers")

    def ray_ready(self, run: StartRun) -> None:
        """Every node joined; then `ray status` confirms the counts while vLLM starts loading
        (it takes seconds of Python on the head, and vLLM waits for its GPUs anyway)."""
        names = {n: naming.container_name(run.inv.cluster, plan.role_of(run.inv, n))
                 for n in run.inv.names}
        t = time.monotonic()
        raywait.wait_joined(run.s.cluster, names, run.inv.ray.start_timeout_s, run.p)
        remaining = max(1.0, run.inv.ray.start_timeout_s - (time.monotonic() - t))
        self._at = len(run.report.outcomes)
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ray-confirm")
        self._confirm = pool.submit(raywait.confirm, run.s.cluster, run.head, names,
                                    plan.gpus_needed(run.inv), remaining, run.p, run.cancel)
        pool.shutdown(wait=False)  # the one job runs on; a failure cancels it (run.cancel)
        self._t0 = t

    def vllm(self, run: StartRun) -> None:
        conn = run.s.cluster.conn(run.head)
        paths = run.facts[run.head].paths
        alive = not self.head_new and vllm.probe(conn, run.inv, paths).process_alive
        if alive:
            run.out(run.head, "vllm", Status.UNCHANGED, "already running (still loading)")
        else:
            run.p.status(run.head, "vllm: launching vllm serve")
            vllm.clear_state(conn, paths)
            if not self.head_new:
                run.created.vllm_on = run.head
            vllm.launch(conn, run.inv, paths)
            run.out(run.head, "vllm", Status.CHANGED,
                    f"launched `vllm serve {plan.require_model(run.inv)}`, log {paths.vllm_log}")
        run.wait_ready(gate=lambda: self._confirmed(run))

    # -- `ray status` confirming in the background ---------------------------------------

    def _confirmed(self, run: StartRun) -> bool:
        """True once `ray status` agreed; raises (as step ray-ready) if it will not."""
        if not self._confirm.done():
            return False
        try:
            st = self._confirm.result()
        except BaseException:
            run.step = "ray-ready"
            raise
        if st is None:
            return False
        if not self._reported:
            self._reported = True
            status = Status.CHANGED if run.created.containers else Status.UNCHANGED
            run.report.outcomes.insert(self._at, Outcome(
                run.head, "ray-ready", status,
                f"{st.nodes} nodes, {st.gpus:g} GPUs ({time.monotonic() - self._t0:.1f}s)"))
        return True

    def _unconfirmed(self, run: StartRun) -> None:
        """On failure: say that `ray status` had not confirmed yet, where it would have."""
        if self._at and not self._reported:
            run.report.outcomes.insert(self._at, Outcome(
                run.head, "ray-ready", Status.SKIPPED,
                "every node joined; `ray status` had not confirmed the counts yet"))
