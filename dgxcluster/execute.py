"""Run one ad-hoc command on many nodes: the capability behind `dgxcluster exec`."""

from __future__ import annotations

from collections.abc import Sequence

from dgxcluster.core.session import Session
from dgxcluster.remote.group import NodeLineCallback
from dgxcluster.remote.result import GroupResult, Result


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
