"""Run one ad-hoc command on many nodes: the capability behind `dgxcluster exec`."""

from __future__ import annotations

from collections.abc import Sequence

from dgxcluster.core.session import Session
from dgxcluster.core.steps import Outcome, Status, failed
from dgxcluster.remote.group import NodeLineCallback
from dgxcluster.remote.result import GroupResult, Result

STEP = "exec"


def run_everywhere(
    session: Session,
    argv: Sequence[str],
    nodes: Sequence[str] | None = None,
    *,
    timeout: float | None = None,
    on_line: NodeLineCallback | None = None,
) -> GroupResult[Result]:
    """Run argv on the selected nodes in parallel; every node's outcome is kept."""
    targets = session.cluster.select(nodes)
    return session.cluster.run(list(argv), targets, timeout=timeout, on_line=on_line)


def outcomes(results: GroupResult[Result]) -> list[Outcome]:
    """Per node: the command ran and exited 0 (changed: exec cannot know it changed nothing),
    exited non-zero (failed), or never ran (failed, or unreachable)."""
    out: list[Outcome] = []
    for node in results:
        value = results[node]
        if isinstance(value, BaseException):
            out.append(failed(node, STEP, value))
        elif value.ok:
            out.append(Outcome(node, STEP, Status.CHANGED, "exited 0", value.duration_s))
        else:
            out.append(Outcome(node, STEP, Status.FAILED, f"exited {value.exit_code}",
                               value.duration_s))
    return out
