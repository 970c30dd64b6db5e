"""Steps compare before they act, and say per node what happened: one `Outcome` type for all.

A second run of the same step must report `unchanged`. Every command's per-node result is
an `Outcome` (build, model sync, start, stop, a copy, a relay peer...), so the CLI prints
them as one table and maps them to an exit code in one place (`cli/exitcodes.py`).
`outcomes_from` turns a fan-out's GroupResult into one outcome per node.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

from dgxcluster.errors import ConnectError
from dgxcluster.remote.result import GroupResult


class Status(str, enum.Enum):
    CHANGED = "changed"
    UNCHANGED = "unchanged"
    FAILED = "failed"
    UNREACHABLE = "unreachable"
    SKIPPED = "skipped"

    @property
    def ok(self) -> bool:
        """The node ended where the step wanted it (changed, unchanged, or not its business)."""
        return self in (Status.CHANGED, Status.UNCHANGED, Status.SKIPPED)


@dataclass(frozen=True)
class Outcome:
    """What happened on one node in one step.

    `tail`: the last lines of the step's output when they explain a failure; `log`: the
    node's full log of the step, if one was kept; `data`: facts the step measured on the
    node (bytes received, an image ID), JSON-able, shown in `--json`.
    """

    node: str
    step: str
    status: Status
    detail: str = ""
    duration_s: float = 0.0
    tail: tuple[str, ...] = ()
    log: str | None = None
    data: Mapping[str, object] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status.ok

    def count(self, key: str) -> int:
        """An integer fact from `data` (0 when absent)."""
        value = self.data.get(key, 0)
        return value if isinstance(value, int) else 0

    def with_(self, **changes: object) -> Outcome:
        """A copy with some fields changed (a later step's view of the same node)."""
        return replace(self, **changes)  # type: ignore[arg-type]

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {
            "node": self.node,
            "step": self.step,
            "status": self.status.value,
            "detail": self.detail,
            "duration_s": round(self.duration_s, 3),
        }
        if self.tail:
            out["tail"] = list(self.tail)
        if self.log is not None:
            out["log"] = self.log
        out.update(self.data)
        return out


def failed(node: str, step: str, err: BaseException | str, **kw: object) -> Outcome:
    """FAILED, or UNREACHABLE when `err` says the node could not be reached."""
    if isinstance(err, ConnectError):
        return Outcome(node, step, Status.UNREACHABLE, err.reason, **kw)  # type: ignore[arg-type]
    return Outcome(node, step, Status.FAILED, str(err), **kw)  # type: ignore[arg-type]


def outcomes_from(step: str, group: GroupResult[Outcome]) -> list[Outcome]:
    """One Outcome per node: the step's own, or FAILED/UNREACHABLE from the node's error."""
    out: list[Outcome] = []
    for node in group:
        value = group[node]
        out.append(value if isinstance(value, Outcome) else failed(node, step, value))
    return out


def worst(outcomes: Iterable[Outcome]) -> Status | None:
    """The status that decides a command's exit: unreachable, then failed; None if all ok."""
    statuses = {o.status for o in outcomes}
    for s in (Status.UNREACHABLE, Status.FAILED):
        if s in statuses:
            return s
    return None
