"""`status --watch`: the cluster refreshed again and again, for a live view.

Each refresh is one SSH round per node (the same script as `status`, over connections the
session keeps open between refreshes) and one HTTP request: rank 0's `/metrics`, over one
kept-alive connection, whose previous answer gives the rates. Nothing else: no hashing of
the build context (the image is compared between nodes only) and no /health or /v1/models
(a `/metrics` that answers with vLLM's metrics means the API server is up; the models are
its `model_name` labels).

A node whose previous round is still running (hung, or still connecting) is not asked
again; it keeps its last answer, marked with its age, so one slow node never stacks up
connections or stalls the others past `round_timeout`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from dgxcluster.core.endpoint import NOT_SERVING, READY, UNHEALTHY, UNREACHABLE, EndpointProbe, base_url
from dgxcluster.core.endpointroute import SSH, EndpointRoute, session_route
from dgxcluster.core.ranks import layout, node_ranks, replicas
from dgxcluster.core.servingmetrics import MetricsError, Reader
from dgxcluster.core.session import Session
from dgxcluster.facts.vllm_metrics import ServingMetrics
from dgxcluster.inventory import placement
from dgxcluster.secrets import CollectedRedactor
from dgxcluster.status.gather import node_round, running_executor
from dgxcluster.status.probe import NodeProbe
from dgxcluster.status.ranks import rank_rows
from dgxcluster.status.report import (
    ClusterStatus,
    NodeStatus,
    image_summary,
    ray_summary,
    vllm_process,
)

#: How long one refresh waits for the nodes; a node still busy after it is shown as late.
ROUND_TIMEOUT_S = 10.0


@dataclass
class Frame:
    """One refresh: the report, when it was taken, how long it took, and the nodes whose
    rows are older than this refresh (node -> age of the row in seconds)."""

    status: ClusterStatus
    at: float  # wall-clock time (time.time())
    took_s: float
    late: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, object]:
        return {"at": self.at, "took_s": self.took_s, "late": self.late,
                **self.status.to_json()}


def endpoint_state(url: str, metrics: ServingMetrics | None, error: BaseException | None
                   ) -> EndpointProbe:
    """What one /metrics request says about the endpoint."""
    if metrics is not None:
        return EndpointProbe(url, READY, 200, list(metrics.models))
    if isinstance(error, ConnectionRefusedError):
        return EndpointProbe(url, NOT_SERVING, error=str(error) or "connection refused")
    if isinstance(error, MetricsError):
        return EndpointProbe(url, UNHEALTHY, error=str(error))
    text = str(error).strip() if error else ""
    return EndpointProbe(url, UNREACHABLE, error=text or type(error).__name__)


def _route(session: Session) -> EndpointRoute | None:
    """The session's endpoint route (direct or through the head's SSH connection)."""
    inv = session.inventory
    if inv.serve.endpoint_via == "direct":
        return None
    key = session.secrets.get(inv.serve.api_key) if inv.serve.api_key else None
    return session_route(session, key)


class Watch:
    """Refreshes the cluster's status; `close` ends the HTTP connection (the session owns
    the SSH ones)."""

    def __init__(self, session: Session, *, reader: Reader | None = None,
                 round_timeout: float = ROUND_TIMEOUT_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.session = session
        self.url = base_url(session.inventory)
        self._http_timeout = min(5.0, round_timeout)
        self._route = None if reader is not None else _route(session)
        self.via: str | None = None
        if reader is None and self._route is not None and self._route.mode == SSH:
            reader, self.via = self._route_reader(), SSH
        self.reader = reader or Reader(self.url, timeout=self._http_timeout)
        self._timeout = round_timeout
        self._clock = clock
        self._lock = threading.Lock()
        self._busy: set[str] = set()
        self._rows: dict[str, tuple[NodeStatus, float]] = {}
        self._probes: dict[str, NodeProbe] = {}
        self._http = ThreadPoolExecutor(max_workers=1, thread_name_prefix="watch-http")

    def _route_reader(self) -> Reader:
        assert self._route is not None
        return Reader(self.url, get=self._route.get, timeout=self._http_timeout)

    def _scrape(self) -> tuple[ServingMetrics | None, BaseException | None]:
        try:
            return self.reader.read(), None
        except (OSError, MetricsError) as exc:
            if self._route is None or self.via == SSH or not isinstance(exc, OSError):
                return None, exc
            failed = exc
        # serve.endpoint_via auto: the endpoint does not answer from here; the head may
        # over SSH (core.endpointroute decides, once); then every refresh goes that way
        through = self._route_reader()
        try:
            metrics = through.read()
        except (OSError, MetricsError):
            return None, failed
        if self._route.via == SSH:
            self.reader.close()
            self.reader, self.via = through, SSH
        return metrics, None

    def _finished(self, node: str) -> None:
        with self._lock:
            self._busy.discard(node)

    def _round(self) -> None:
        """The SSH round on every node not still busy with an earlier one."""
        with self._lock:
            nodes = [n for n in self.session.cluster.names if n not in self._busy]
            self._busy.update(nodes)
        if not nodes:
            return
        done = node_round(self.session, nodes, timeout=self._timeout, finished=self._finished)
        now = self._clock()
        with self._lock:
            for row in done.nodes:
                if row.node in done.timed_out:
                    continue  # busy until its call ends (`_finished`)
                self._busy.discard(row.node)
                self._rows[row.node] = (row, now)
            self._probes.update(done.probes)

    def refresh(self) -> Frame:
        started = self._clock()
        wall = time.time()
        http: Future[tuple[ServingMetrics | None, BaseException | None]] = self._http.submit(
            self._scrape)
        self._round()
        metrics, error = http.result()
        return self._frame(wall, started, metrics, error)

    def _frame(self, wall: float, started: float, metrics: ServingMetrics | None,
               error: BaseException | None) -> Frame:
        inv = self.session.inventory
        head = inv.head_name
        now = self._clock()
        rows: list[NodeStatus] = []
        late: dict[str, float] = {}
        for name in self.session.cluster.names:
            kept = self._rows.get(name)
            if kept is None:
                role = "head" if name == head else "worker"
                rows.append(NodeStatus(name, role, reachable=True, error="no answer yet"))
                continue
            row, at = kept
            if at < started:
                late[name] = round(now - at, 1)
            rows.append(row)
        vllm = endpoint_state(self.url, metrics, error)
        vllm.via = self.via if metrics is not None and self.via else vllm.via
        redact = CollectedRedactor(inv.secrets.env, self.session.redactor).text
        head_row = next((n for n in rows if n.node == head), None)
        executor = running_executor(head_row, inv.serve.executor)
        status = ClusterStatus(
            cluster=inv.cluster, head=head, nodes=rows,
            image=image_summary(inv.image.name, rows, None, None),
            ray=ray_summary(head, self._probes.get(head), len(placement.serving(inv))),
            vllm=vllm,
            vllm_process=vllm_process(self._probes.get(head), head_row, redact),
            serving=metrics,
            serving_error=None if metrics is not None else vllm.error,
            executor=executor,
            ranks=rank_rows(node_ranks(inv), self._probes, rows, redact, replicas(inv))
            if executor == "native" else None,
            layout=layout(inv),
        )
        return Frame(status, wall, round(now - started, 3), late)

    def close(self) -> None:
        self._http.shutdown(wait=False, cancel_futures=True)
        self.reader.close()
