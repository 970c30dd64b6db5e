"""Steps compare before they act, and say per node what happened: changed, unchanged or failed.

A second run of the same step must report `unchanged`. `Outcome`s are what the CLI prints
as a table; `outcomes_from` turns a fan-out's GroupResult into one outcome per node.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from dgxcluster.errors import ConnectError
from dgxcluster.remote.result import GroupResult


class Status(str, enum.Enum):
    CHANGED = "changed"
    UNCHANGED = "unchanged"
    FAILED = "failed"
    UNREACHABLE = "unreachable"
    SKIPPED = "skipped"


@dataclass(frozen=True)
class Outcome:
    node: str
    step: str
    status: Status
    detail: str = ""
    duration_s: float = 0.0

    def to_json(self) -> dict[str, object]:
        return {
            "node": self.node,
            "step": self.step,
            "status": self.status.value,
            "detail": self.detail,
            "duration_s": round(self.duration_s, 3),
        }


def outcomes_from(step: str, group: GroupResult[Outcome]) -> list[Outcome]:
    """One Outcome per node: the step's own, or FAILED/UNREACHABLE from the node's error."""
    out: list[Outcome] = []
    for node in group:
        value = group[node]
        if isinstance(value, Outcome):
            out.append(value)
        elif isinstance(value, ConnectError):
            out.append(Outcome(node, step, Status.UNREACHABLE, value.reason))
        else:
            out.append(Outcome(node, step, Status.FAILED, str(value)))
    return out
