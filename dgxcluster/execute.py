"""Run one ad-hoc command on many nodes: the capability behind `dgxcluster exec`.

Output may be anything a user's command prints, hundreds of megabytes included: it is
handed on live in blocks of lines (`on_output`, one call per chunk read, so printing costs
time linear in the output and no per-line Python work), and each node's Result keeps only
the last KEEP_BYTES of each stream (`Result.truncated` says when more came), so memory stays
bounded whatever the command prints.
"""

from __future__ import annotations

from collections.abc import Sequence

from dgxcluster.core.session import Session
from dgxcluster.core.steps import Outcome, Status, failed
from dgxcluster.remote.group import NodeLinesCallback
from dgxcluster.remote.result import GroupResult, Result

STEP = "exec"
#: What each node's Result keeps of its stdout and of its stderr (the last bytes).
KEEP_BYTES = 1 << 20


def run_everywhere(
    session: Session,
    argv: Sequence[str],
    nodes: Sequence[str] | None = None,
    *,
    timeout: float | None = None,
    on_output: NodeLinesCallback | None = None,
) -> GroupResult[Result]:
    """Run argv on the selected nodes in parallel; every node's outcome is kept.
    `on_output(node, stream, block)` gets blocks of complete lines (bytes, each line ending
    in a newline, secrets masked)."""
    targets = session.cluster.select(nodes)
    return session.cluster.run(list(argv), targets, timeout=timeout, on_lines=on_output,
                               keep=KEEP_BYTES)


def prefixed(node: str, block: bytes) -> tuple[bytes, memoryview]:
    """A block of lines as pdsh prints it, every line prefixed `node: `: the first line's
    prefix, then the rest (one bytes.replace, a C loop: no Python work per line, and one
    copy of the block). Write both, in order."""
    prefix = f"{node}: ".encode()
    if not block:
        return b"", memoryview(b"")
    if block.find(b"\n") == len(block) - 1:  # one line (a piece of a long one): no copy
        return prefix, memoryview(block)
    return prefix, memoryview(block.replace(b"\n", b"\n" + prefix))[: -len(prefix)]


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
