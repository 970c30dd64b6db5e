"""Declared stage lists: a command is a list of named stages, walked in order over one run.

    STAGES = (Stage("check", probe), Stage("plan", plan), Stage("build", build_all))
    walk(STAGES, run, run.ledger)

The walk and the `Ledger` keep the bookkeeping in one place, so each stage is only its own
work: the stage now running (named in every failure), each node's outcomes, the nodes that
are out of the run (failed or unreachable: later stages leave them alone), and one rollback
when a stage raises or the operator presses Ctrl-C. Unit tests drive the same lists with
fake connections.
"""

from __future__ import annotations

import enum
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from dgxcluster.core.progress import NullProgress, Progress
from dgxcluster.core.steps import Outcome, Status, failed

S = TypeVar("S")


class Next(enum.Enum):
    """What a stage may return instead of None: DONE ends the walk early (nothing left to do)."""

    DONE = "done"


DONE = Next.DONE


@dataclass(frozen=True)
class Stage(Generic[S]):
    """One named stage: `run(state)` does its work, returns None to go on or DONE to stop."""

    name: str
    run: Callable[[S], Next | None]


class Ledger:
    """Every outcome of one run, per node, in the order they happened (thread-safe).

    A node with a FAILED or UNREACHABLE outcome is out: `live()` leaves it out of later
    stages, so one node failing never stops the others and is never asked again.
    """

    def __init__(self, nodes: Iterable[str], progress: Progress | None = None) -> None:
        self.nodes = list(nodes)
        self.progress = progress or NullProgress()
        self.stage = ""
        self.outcomes: list[Outcome] = []
        self._out: set[str] = set()
        self._t0 = time.monotonic()
        self._lock = threading.Lock()

    def record(self, outcome: Outcome, *, say: str | None = None) -> Outcome:
        """Keep `outcome`; show `say` (default: the outcome's status and detail) as the
        node's live status."""
        if outcome.duration_s == 0.0:
            outcome = outcome.with_(duration_s=time.monotonic() - self._t0)
        with self._lock:
            self.outcomes.append(outcome)
            if not outcome.ok:
                self._out.add(outcome.node)
        first = outcome.detail.splitlines()[0] if outcome.detail else ""
        shown = say if say is not None else (
            first if outcome.ok else f"{outcome.status.value}: {first}")
        self.progress.status(outcome.node, shown)
        return outcome

    def ok(self, node: str, detail: str, *, changed: bool = True, step: str | None = None,
           **kw: object) -> Outcome:
        status = Status.CHANGED if changed else Status.UNCHANGED
        return self.record(Outcome(node, step or self.stage, status, detail, **kw))  # type: ignore[arg-type]

    def fail(self, node: str, err: BaseException | str, *, step: str | None = None,
             **kw: object) -> Outcome:
        """FAILED (UNREACHABLE for a connection error) at the current stage; the node is out."""
        return self.record(failed(node, step or self.stage, err, **kw))

    def is_out(self, node: str) -> bool:
        with self._lock:
            return node in self._out

    def live(self, nodes: Iterable[str] | None = None) -> list[str]:
        """The nodes (default: all) still in the run, in order."""
        with self._lock:
            return [n for n in (self.nodes if nodes is None else nodes) if n not in self._out]

    def last_of(self, node: str) -> Outcome | None:
        with self._lock:
            return next((o for o in reversed(self.outcomes) if o.node == node), None)

    def last(self) -> list[Outcome]:
        """One outcome per node that has any: its latest, in node order."""
        with self._lock:
            latest = {o.node: o for o in self.outcomes}
        return [latest[n] for n in self.nodes if n in latest]


def walk(stages: Sequence[Stage[S]], state: S, ledger: Ledger, *,
         rollback: Callable[[BaseException], None] | None = None) -> None:
    """Run each stage in order, with `ledger.stage` naming it; on any exception (Ctrl-C too)
    call `rollback(exc)` once, then let the exception go (rollback may raise a better one)."""
    for stage in stages:
        ledger.stage = stage.name
        try:
            if stage.run(state) is DONE:
                return
        except BaseException as exc:
            if rollback is not None:
                rollback(exc)
            raise
