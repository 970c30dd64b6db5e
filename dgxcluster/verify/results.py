"""What verify-ib reports: one `CheckResult` per node and check, with evidence and a fix.

Checks that concern the whole cluster (inventory settings, cross-node comparisons, NCCL
bandwidth) use the node name `cluster`; ib_write_bw pairs use `nodeA->nodeB`.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from dgxcluster.core.steps import Outcome, Status

CLUSTER = "cluster"
SIMULATED = "simulated hardware"


class Level(str, enum.Enum):
    PASS = "PASS"  # noqa: S105 - a status, not a password
    WARN = "WARN"
    FAIL = "FAIL"


_RANK = {Level.PASS: 0, Level.WARN: 1, Level.FAIL: 2}


def worst(levels: Iterable[Level]) -> Level:
    return max(levels, key=lambda lv: _RANK[lv], default=Level.PASS)


@dataclass(frozen=True)
class CheckResult:
    node: str
    check: str
    status: Level
    detail: str
    fix: str = ""
    data: Mapping[str, Any] | None = None  # figures for --json (the per-link table)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"node": self.node, "check": self.check,
                               "status": self.status.value, "detail": self.detail,
                               "fix": self.fix if self.status != Level.PASS else ""}
        if self.data is not None:
            out["data"] = dict(self.data)
        return out

    def labelled(self, label: str) -> CheckResult:
        return replace(self, detail=f"{label}: {self.detail}")


@dataclass
class Report:
    results: list[CheckResult] = field(default_factory=list)
    unreachable: dict[str, str] = field(default_factory=dict)
    simulated: list[str] = field(default_factory=list)

    @property
    def failed(self) -> list[CheckResult]:
        return [r for r in self.results if r.status == Level.FAIL]

    @property
    def warned(self) -> list[CheckResult]:
        return [r for r in self.results if r.status == Level.WARN]

    def to_json(self) -> list[dict[str, Any]]:
        return [r.to_json() for r in self.results]

    @property
    def outcomes(self) -> list[Outcome]:
        """Per node (or `cluster`, or a pair): failed if any check FAILed, unreachable if it
        could not be asked. Checks are many per node, each PASS/WARN/FAIL with its own fix,
        so they stay `CheckResult`s; these outcomes are what the exit code is made from."""
        out = [Outcome(n, "verify-ib", Status.UNREACHABLE, why)
               for n, why in self.unreachable.items()]
        for node in dict.fromkeys(r.node for r in self.results):
            level = worst(r.status for r in self.results if r.node == node)
            out.append(Outcome(node, "verify-ib",
                               Status.FAILED if level is Level.FAIL else Status.UNCHANGED,
                               level.value))
        return out


class Checks:
    """Collects the results of one node's (or the cluster's) checks, in a fixed order."""

    def __init__(self, node: str) -> None:
        self.node = node
        self.results: list[CheckResult] = []

    def add(self, check: str, status: Level, detail: str, fix: str = "") -> None:
        self.results.append(CheckResult(self.node, check, status, detail, fix))

    def ok(self, check: str, detail: str) -> None:
        self.add(check, Level.PASS, detail)

    def warn(self, check: str, detail: str, fix: str) -> None:
        self.add(check, Level.WARN, detail, fix)

    def fail(self, check: str, detail: str, fix: str) -> None:
        self.add(check, Level.FAIL, detail, fix)

    def extend(self, results: Iterable[CheckResult]) -> None:
        self.results.extend(results)
