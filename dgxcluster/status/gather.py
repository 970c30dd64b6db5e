"""`dgxcluster status`: one SSH round per node, in parallel with the vLLM endpoint check.

While the nodes answer, the operator also hashes the build context (the image tag the
inventory expects) and asks the vLLM endpoint over HTTP; none waits for another.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from dgxcluster.core import imageid
from dgxcluster.core.endpoint import EndpointProbe, base_url, probe
from dgxcluster.core.nodepaths import NodePaths
from dgxcluster.core.ranks import node_ranks
from dgxcluster.core.session import Session
from dgxcluster.errors import ConnectError, DgxClusterError
from dgxcluster.remote.connection import Connection
from dgxcluster.secrets import CollectedRedactor
from dgxcluster.status.probe import NodeProbe, parse, status_argv
from dgxcluster.status.ranks import rank_rows
from dgxcluster.status.report import (
    ClusterStatus,
    NodeStatus,
    image_summary,
    node_status,
    ray_summary,
    vllm_process,
)

ROUND_TIMEOUT_S = 30.0


def expected_tag(session: Session) -> str:
    """The content tag the inventory's build context gives today (raises if it cannot)."""
    return imageid.expected(session.inventory).content_tag


def endpoint(session: Session) -> EndpointProbe:
    return probe(base_url(session.inventory), timeout=3.0)


def gather(
    session: Session,
    *,
    expected: Callable[[Session], str] = expected_tag,
    check_endpoint: Callable[[Session], EndpointProbe] = endpoint,
) -> ClusterStatus:
    inv = session.inventory
    head = inv.head_name
    pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="status")
    tag_job = pool.submit(expected, session)
    vllm_job = pool.submit(check_endpoint, session)
    pool.shutdown(wait=False)

    log_dir = NodePaths.unresolved(inv.state_dir, inv.cluster).log_dir

    def one(conn: Connection) -> NodeProbe:
        # every node reports its vLLM launcher's files: with the native executor each runs a rank
        on_head = conn.node == head
        argv = status_argv(inv.image.name, inv.cluster, inv.ray.dashboard_port if on_head else None,
                           log_dir)
        res = conn.run(argv, timeout=ROUND_TIMEOUT_S)
        return parse(res.stdout)

    group = session.cluster.map(one)
    tag: str | None = None
    tag_error = None
    failed = tag_job.exception()
    if failed is None:
        tag = tag_job.result()
    else:
        tag_error = str(failed) if isinstance(failed, DgxClusterError) \
            else f"{type(failed).__name__}: {failed}"
    nodes: list[NodeStatus] = []
    probes: dict[str, NodeProbe] = {}
    for name in group:
        role = "head" if name == head else "worker"
        value = group[name]
        if isinstance(value, NodeProbe):
            probes[name] = value
            nodes.append(node_status(name, role, value))
        elif isinstance(value, ConnectError):
            nodes.append(NodeStatus(name, role, reachable=False, error=value.reason))
        else:
            nodes.append(NodeStatus(name, role, reachable=True, error=str(value)))
    executor = running_executor(next((n for n in nodes if n.node == head), None),
                                inv.serve.executor)
    redact = CollectedRedactor(inv.secrets.env, session.redactor).text
    down = vllm_job.exception()
    vllm = vllm_job.result() if down is None else EndpointProbe(
        base_url(inv), "unreachable", error=str(down))
    return ClusterStatus(
        cluster=inv.cluster,
        head=head,
        nodes=nodes,
        image=image_summary(inv.image.name, nodes, tag, tag_error),
        ray=ray_summary(head, probes.get(head), len(inv.nodes)),
        vllm=vllm,
        vllm_process=vllm_process(
            probes.get(head), next((n for n in nodes if n.node == head), None), redact),
        executor=executor,
        ranks=rank_rows(node_ranks(inv), probes, nodes, redact) if executor == "native" else None,
    )


def running_executor(head: NodeStatus | None, configured: str) -> str:
    """What the head's container says it runs (`dgxcluster.executor`), else the inventory's."""
    labels = [c.executor for c in head.containers if c.executor] if head else []
    return labels[0] if labels else configured
