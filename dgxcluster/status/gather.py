"""`dgxcluster status`: one SSH round per node, in parallel with the vLLM endpoint check.

While the nodes answer, the operator also hashes the build context (the image tag the
inventory expects) and asks the vLLM endpoint over HTTP; none waits for another. When the
endpoint is ready, rank 0's `/metrics` is read twice: once as soon as the endpoint answered,
once after the nodes did, at least `RATE_INTERVAL_S` later, so that prompt and generation
throughput are rates over that interval (one scrape gives no rate). Latency quantiles in
one-shot status cover everything since the server started.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from dgxcluster.core import imageid
from dgxcluster.core.endpoint import EndpointProbe, base_url, probe
from dgxcluster.core.endpointroute import session_route
from dgxcluster.core.nodepaths import NodePaths
from dgxcluster.core.ranks import layout, node_ranks, replicas
from dgxcluster.core.servingmetrics import MetricsError, Reader
from dgxcluster.core.session import Session
from dgxcluster.errors import CommandTimeout, ConnectError, DgxClusterError
from dgxcluster.facts.vllm_metrics import ServingMetrics
from dgxcluster.inventory import placement
from dgxcluster.remote.connection import Connection
from dgxcluster.secrets import CollectedRedactor
from dgxcluster.status.probe import NodeProbe, parse, persist_of, status_argv
from dgxcluster.status.ranks import rank_rows
from dgxcluster.status.report import (
    ClusterStatus,
    NodeStatus,
    healing,
    image_summary,
    node_status,
    persist_line,
    persist_summary,
    ray_lags,
    ray_summary,
    vllm_process,
)

ROUND_TIMEOUT_S = 30.0
#: The shortest interval one-shot status measures throughput over.
RATE_INTERVAL_S = 1.0


def expected_tag(session: Session) -> str:
    """The content tag the inventory's build context gives today (raises if it cannot)."""
    return imageid.expected(session.inventory).content_tag


def endpoint(session: Session) -> EndpointProbe:
    """The readiness probe, with the API key when the inventory names one and it is set
    here (without it, /v1/models answers 401 and the probe says so)."""
    inv = session.inventory
    key = session.secrets.get(inv.serve.api_key) if inv.serve.api_key else None
    route = session_route(session, key)
    found = probe(base_url(inv), route.get, timeout=3.0)
    found.via = route.via
    return found


def auth(session: Session) -> str:
    """`on (NAME)` / `off`, from the inventory, and whether this shell holds the key."""
    name = session.inventory.serve.api_key
    if name is None:
        return "off"
    return f"on ({name})" if name in session.secrets else f"on ({name}, not set here)"


def metrics_reader(session: Session) -> Reader:
    """Latency quantiles since the server started: one-shot status sees one second only."""
    inv = session.inventory
    key = session.secrets.get(inv.serve.api_key) if inv.serve.api_key else None
    return Reader(base_url(inv), get=session_route(session, key).get, timeout=3.0, window_s=None)


@dataclass
class Round:
    """What one SSH round gave: every node's status, and the probes of those that answered."""

    nodes: list[NodeStatus]
    probes: dict[str, NodeProbe]
    timed_out: set[str] = field(default_factory=set)  # still running when the round ended


def node_round(session: Session, nodes: Sequence[str] | None = None,
               timeout: float | None = None,
               finished: Callable[[str], None] | None = None) -> Round:
    """Run the status script on `nodes` (default every node) at once, one SSH round each.
    `timeout`: how long to wait for a node (`Cluster.map`'s); `finished(node)` is called
    when a node's call has ended, also one the round stopped waiting for."""
    inv = session.inventory
    head = inv.head_name
    log_dir = NodePaths.unresolved(inv.state_dir, inv.cluster).log_dir

    def one(conn: Connection) -> NodeProbe:
        try:
            on_head = conn.node == head
            argv = status_argv(inv.image.name, inv.cluster,
                               inv.ray.dashboard_port if on_head else None,
                               log_dir)  # native: every node runs a rank
            res = conn.run(argv, timeout=ROUND_TIMEOUT_S)
            return parse(res.stdout)
        finally:
            if finished is not None:
                finished(conn.node)

    group = session.cluster.map(one, nodes, timeout=timeout)
    out = Round([], {})
    for name in group:
        role = "head" if name == head else "worker"
        value = group[name]
        if isinstance(value, NodeProbe):
            out.probes[name] = value
            out.nodes.append(node_status(name, role, value))
        elif isinstance(value, CommandTimeout):
            out.timed_out.add(name)
            out.nodes.append(NodeStatus(name, role, reachable=True, error=str(value)))
        elif isinstance(value, ConnectError):
            out.nodes.append(NodeStatus(name, role, reachable=False, error=value.reason))
        else:
            out.nodes.append(NodeStatus(name, role, reachable=True, error=str(value)))
    return out


def read_metrics(reader: Reader, min_interval: float = 0.0) -> tuple[ServingMetrics | None,
                                                                     str | None]:
    """One scrape through `reader`: the summary, or why there is none (never raises for
    the network or a server that is not vLLM)."""
    try:
        return reader.read(min_interval), None
    except (OSError, MetricsError) as exc:
        return None, str(exc).strip() or type(exc).__name__


def _endpoint_then_metrics(session: Session, check: Callable[[Session], EndpointProbe],
                           reader: Reader) -> tuple[EndpointProbe, str | None]:
    state = check(session)
    error = None
    if state.ready:
        _, error = read_metrics(reader)
    return state, error


def _error_text(exc: BaseException) -> str:
    return str(exc) if isinstance(exc, DgxClusterError) else f"{type(exc).__name__}: {exc}"


def gather(
    session: Session,
    *,
    expected: Callable[[Session], str] = expected_tag,
    check_endpoint: Callable[[Session], EndpointProbe] = endpoint,
    reader: Callable[[Session], Reader] = metrics_reader,
) -> ClusterStatus:
    inv = session.inventory
    head = inv.head_name
    scraper = reader(session)
    pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="status")
    tag_job = pool.submit(expected, session)
    vllm_job = pool.submit(_endpoint_then_metrics, session, check_endpoint, scraper)
    pool.shutdown(wait=False)

    done = node_round(session)
    tag: str | None = None
    tag_error = None
    failed = tag_job.exception()
    if failed is None:
        tag = tag_job.result()
    else:
        tag_error = _error_text(failed)
    head_status = next((n for n in done.nodes if n.node == head), None)
    executor = running_executor(head_status, inv.serve.executor)
    redact = CollectedRedactor(inv.secrets.env, session.redactor).text
    down = vllm_job.exception()
    if down is None:
        vllm, serving_error = vllm_job.result()
    else:
        vllm, serving_error = EndpointProbe(base_url(inv), "unreachable", error=str(down)), None
    serving = None
    if vllm.ready and serving_error is None:
        serving, serving_error = read_metrics(scraper, RATE_INTERVAL_S)
    scraper.close()
    ray = ray_summary(head, done.probes.get(head), len(placement.serving(inv)))
    # vLLM's workers hold Ray GPUs only under the Ray executor (native ranks bypass Ray)
    on_ray = vllm.ready and executor != "native"
    ray.lagging = ray_lags(ray, done.nodes, inv.gpus_per_node,
                           placement.place(inv).world if on_ray else 0)
    persist_nodes = persist_lines(done, head_status)
    return ClusterStatus(
        persist=persist_summary(persist_nodes),
        persist_nodes=persist_nodes,
        cluster=inv.cluster,
        head=head,
        nodes=done.nodes,
        image=image_summary(inv.image.name, done.nodes, tag, tag_error),
        ray=ray,
        vllm=vllm,
        vllm_process=vllm_process(
            done.probes.get(head), head_status, redact),
        serving=serving,
        serving_error=serving_error if vllm.ready else None,
        auth=auth(session),
        healing=healing(done.probes.get(head), redact),
        worker_healing={} if executor == "native" else {
            n: h for n in node_ranks(inv) if n != head
            and (h := healing(done.probes.get(n), redact)) is not None},
        executor=executor,
        ranks=rank_rows(node_ranks(inv), done.probes, done.nodes, redact, replicas(inv))
        if executor == "native" else None,
        layout=layout(inv),
    )


def persist_lines(done: Round, head: NodeStatus | None) -> dict[str, str]:
    """Each answering node's `serve.persist` line, against the config the head runs."""
    running = next((c.config for c in head.containers if c.config and c.state == "running"),
                   None) if head else None
    out: dict[str, str] = {}
    for node, answer in done.probes.items():
        got = persist_of(answer)
        if got is not None:
            out[node] = persist_line(got[0], got[1], running)
    return out


def running_executor(head: NodeStatus | None, configured: str) -> str:
    """What the head's container says it runs (`dgxcluster.executor`), else the inventory's."""
    labels = [c.executor for c in head.containers if c.executor] if head else []
    return labels[0] if labels else configured
