"""`stop`: persistence first (each node's boot unit, `serving.persist`), then vLLM
gracefully, then Ray workers, then the head; containers and env-files go.

Reachable nodes are always cleaned, even when others are not; the unreachable ones are
reported (the CLI exits 3). With nothing of this cluster on any node, nothing happens.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

from dgxcluster.core.progress import NullProgress, Progress
from dgxcluster.core.session import Session
from dgxcluster.core.steps import Outcome, Status, outcomes_from
from dgxcluster.errors import ConnectError
from dgxcluster.serving import persist
from dgxcluster.serving.lock import ClusterLock
from dgxcluster.serving.teardown import Found, discover, teardown


@dataclass
class StopReport:
    outcomes: list[Outcome] = field(default_factory=list)
    unreachable: dict[str, str] = field(default_factory=dict)  # node -> reason
    nothing: bool = False
    lock_skipped: str | None = None  # why the cluster lock was not taken


def stop(session: Session, keep_containers: bool = False,
         progress: Progress | None = None) -> StopReport:
    prog = progress or NullProgress()
    inv = session.inventory
    report = StopReport()
    lock: ClusterLock | None = None
    try:
        lock = ClusterLock(session.cluster.conn(inv.head_name), inv.state_dir, inv.cluster, "stop")
        lock.acquire()
    except ConnectError as exc:
        # A start cannot run without the head either; clean what can be reached.
        report.lock_skipped = f"head {inv.head_name} unreachable ({exc.reason})"
        lock = None
    try:
        _stop_locked(session, keep_containers, prog, report)
    finally:
        if lock is not None:
            with contextlib.suppress(Exception):
                lock.release()
    return report


def _stop_locked(session: Session, keep: bool, prog: Progress, report: StopReport) -> None:
    for n in session.inventory.names:
        prog.status(n, "discover")
    group = session.cluster.map(lambda c: discover(c, session))
    for node, err in group.errors.items():
        if isinstance(err, ConnectError):
            report.unreachable[node] = err.reason + (f"\n  fix: {err.hint}" if err.hint else "")
            report.outcomes.append(Outcome(node, "discover", Status.UNREACHABLE, err.reason))
        else:
            report.outcomes.append(Outcome(node, "discover", Status.FAILED, str(err)))
    # persistence first, on every node that answered, whatever runs: a reboot after a stop
    # must start nothing, even when the containers were already gone
    removed = _remove_persistence(session, group.values, prog, report)
    found: dict[str, Found] = {n: f for n, f in group.values.items() if not f.empty}
    if not found and removed:
        for node in group.values:
            report.outcomes.append(Outcome(node, "stop", Status.UNCHANGED, "no containers here"))
        return
    if not found:
        report.nothing = True
        for node in group.values:
            prog.status(node, "nothing to stop")
        return
    for o in teardown(session, found, prog, keep_containers=keep):
        report.outcomes.append(o)
        if o.status is Status.UNREACHABLE:
            report.unreachable.setdefault(o.node, o.detail)
    for node in group.values:
        if node not in found:
            report.outcomes.append(Outcome(node, "stop", Status.UNCHANGED, "nothing of this cluster here"))


def _remove_persistence(session: Session, answered: dict[str, Found], prog: Progress,
                        report: StopReport) -> bool:
    """Every answering node's boot unit and plan removed; True if any node had one."""
    nodes = [n for n, f in answered.items() if f.unit]
    for n in nodes:
        prog.status(n, "persist: removing the boot unit")
    unit = session.cluster.map(
        lambda c: persist.remove(c, session.inventory, answered[c.node].paths), nodes)
    removed = False
    for o in outcomes_from(persist.STEP, unit):
        if o.status is not Status.UNCHANGED:
            report.outcomes.append(o)
            removed = True
    return removed
