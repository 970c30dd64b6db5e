"""`verify_ib`: read every node's fabric facts at once, ping across, judge, optionally measure.

Facts are read in parallel (one connection per node); a node that cannot be reached is
reported (check `ssh`) and left out of the comparisons, never hiding the others. Results
from nodes whose tools said "simulated hardware" (the testbed) are labelled so.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from dgxcluster.core.containerenv import container_env
from dgxcluster.core.progress import NullProgress, Progress
from dgxcluster.core.session import Session
from dgxcluster.errors import ConnectError
from dgxcluster.verify.cluster_checks import cluster_checks
from dgxcluster.verify.env_checks import container_checks, env_checks
from dgxcluster.verify.gather import NodeFacts, gather_node, ping_peers
from dgxcluster.verify.links import link_checks
from dgxcluster.verify.netplan_check import netplan_check
from dgxcluster.verify.node_checks import node_checks
from dgxcluster.verify.results import SIMULATED, CheckResult, Level, Report

if TYPE_CHECKING:
    from dgxcluster.inventory.load import Inventory


def verify_ib(session: Session, nodes: Sequence[str] | None = None, *, bandwidth: bool = False,
              min_busbw: float | None = None, progress: Progress | None = None) -> Report:
    inv = session.inventory
    cluster = session.cluster
    targets = cluster.select(nodes)
    prog = progress or NullProgress()
    report = Report()
    failures: dict[str, str] = {}
    facts: dict[str, NodeFacts] = {}

    def absorb(name: str, value: object) -> None:
        if isinstance(value, NodeFacts):
            facts[name] = value
        elif isinstance(value, ConnectError):
            hint = f" (fix: {value.hint})" if value.hint else ""
            report.unreachable[name] = f"{value.reason}{hint}"
            facts.pop(name, None)
        elif isinstance(value, BaseException):
            failures[name] = str(value)
            facts.pop(name, None)

    got = cluster.map(lambda conn: gather_node(conn, inv, prog), targets)
    for name in got:
        absorb(name, got[name])
    pinged = cluster.map(lambda conn: ping_peers(conn, inv, facts[conn.node], prog), list(facts))
    for name in pinged:
        absorb(name, pinged[name])

    results = _per_node(inv, targets, report, failures, facts)
    results += container_checks(inv)
    shared = cluster_checks(inv, [inv.node(n) for n in targets if n in facts], facts)
    shared += link_checks(inv, facts)
    if report.simulated:
        label = f"{SIMULATED} on {', '.join(report.simulated)}"
        shared = [r.labelled(label) if r.check in ("cabling", "link") else r for r in shared]
    results += shared
    if bandwidth:
        from dgxcluster.verify.bandwidth import run_bandwidth

        results += run_bandwidth(session, [n for n in targets if n in facts], min_busbw, prog)
    for name in facts:
        prog.status(name, "done")
    report.results = results
    return report


def _per_node(inv: Inventory, targets: Sequence[str], report: Report, failures: dict[str, str],
              facts: dict[str, NodeFacts]) -> list[CheckResult]:
    """Each node's checks; an unreachable node or one whose facts could not be read FAILs."""
    results: list[CheckResult] = []
    for name in targets:
        spec = inv.node(name)
        if name in report.unreachable:
            results.append(CheckResult(name, "ssh", Level.FAIL,
                                       f"unreachable: {report.unreachable[name]}",
                                       "check that the node is up and sshd answers "
                                       "(dgxcluster exec -n NODE -- true)"))
        elif name in failures:
            results.append(CheckResult(name, "facts", Level.FAIL,
                                       f"could not read the node's facts: {failures[name]}",
                                       "run again with -v to see the failing command"))
        else:
            f = facts[name]
            node_results = node_checks(inv, spec, f) + env_checks(
                inv, spec, f, container_env(inv, name)) + netplan_check(inv, spec, f)
            if f.simulated:
                node_results = [r.labelled(SIMULATED) for r in node_results]
                report.simulated.append(name)
            results += node_results
    return results
