"""The stage walk and its ledger, the one Outcome type, and the one exit-code mapping."""

from __future__ import annotations

import pytest
import typer

from dgxcluster.cli.exitcodes import exit_code_for, exit_code_of
from dgxcluster.cli.state import finish
from dgxcluster.core.progress import RecordingProgress
from dgxcluster.core.stages import DONE, Ledger, Next, Stage, walk
from dgxcluster.core.steps import Outcome, Status, failed, outcomes_from, worst
from dgxcluster.errors import (
    CommandError,
    ConnectError,
    InventoryError,
    NodesFailed,
    StepError,
    UsageError,
)
from dgxcluster.remote.result import GroupResult


class Run:
    def __init__(self) -> None:
        self.seen: list[str] = []
        self.ledger = Ledger(["n1", "n2", "n3"], RecordingProgress())

    def one(self) -> None:
        self.seen.append(f"one@{self.ledger.stage}")

    def stop_here(self) -> Next:
        self.seen.append("stop")
        return DONE

    def boom(self) -> None:
        raise StepError(self.ledger.stage, "broke", "n2")

    def never(self) -> None:
        self.seen.append("never")


def test_walk_runs_stages_in_order_naming_each() -> None:
    run = Run()
    walk((Stage("a", Run.one), Stage("b", Run.one)), run, run.ledger)
    assert run.seen == ["one@a", "one@b"]


def test_done_ends_the_walk() -> None:
    run = Run()
    walk((Stage("a", Run.stop_here), Stage("b", Run.never)), run, run.ledger)
    assert run.seen == ["stop"]


@pytest.mark.parametrize("exc", [StepError("x", "broke"), KeyboardInterrupt()])
def test_a_failing_stage_rolls_back_once_then_raises(exc: BaseException) -> None:
    run = Run()
    rolled: list[tuple[str, BaseException]] = []

    def raise_it(_r: Run) -> None:
        raise exc

    with pytest.raises(type(exc)):
        walk((Stage("a", Run.one), Stage("b", raise_it), Stage("c", Run.never)), run, run.ledger,
             rollback=lambda e: rolled.append((run.ledger.stage, e)))
    assert rolled == [("b", exc)] and run.seen == ["one@a"]


def test_rollback_may_raise_a_better_error() -> None:
    run = Run()

    def better(e: BaseException) -> None:
        raise NodesFailed("start", {"n2": e})

    with pytest.raises(NodesFailed):
        walk((Stage("b", Run.boom),), run, run.ledger, rollback=better)


def test_ledger_keeps_failed_nodes_out_and_the_last_outcome_per_node() -> None:
    prog = RecordingProgress()
    led = Ledger(["n1", "n2", "n3"], prog)
    led.stage = "copy"
    led.ok("n1", "sent", changed=True)
    led.fail("n2", ConnectError("n2", "timed out"))
    led.fail("n3", "disk full")
    led.ok("n1", "verified", changed=False, step="verify")
    assert led.live() == ["n1"] and led.is_out("n2") and led.live(["n3", "n1"]) == ["n1"]
    last = {o.node: (o.step, o.status, o.detail) for o in led.last()}
    assert last == {"n1": ("verify", Status.UNCHANGED, "verified"),
                    "n2": ("copy", Status.UNREACHABLE, "timed out"),
                    "n3": ("copy", Status.FAILED, "disk full")}
    assert ("n2", "unreachable: timed out") in prog.statuses
    assert ("n1", "sent") in prog.statuses
    assert led.last_of("n1") is not None and led.last_of("n1").detail == "verified"  # type: ignore[union-attr]


def test_outcome_json_carries_tail_log_and_data_only_when_set() -> None:
    plain = Outcome("n1", "build", Status.CHANGED, "built", 1.23456)
    assert plain.to_json() == {"node": "n1", "step": "build", "status": "changed",
                               "detail": "built", "duration_s": 1.235}
    rich = plain.with_(tail=("a", "b"), log="/l/n1.log", data={"image_id": "sha256:x"})
    assert rich.to_json()["tail"] == ["a", "b"] and rich.to_json()["log"] == "/l/n1.log"
    assert rich.to_json()["image_id"] == "sha256:x" and rich.count("bytes") == 0
    assert plain.with_(data={"bytes": 7}).count("bytes") == 7


def test_failed_tells_unreachable_from_failed() -> None:
    assert failed("n", "s", ConnectError("n", "refused")).status is Status.UNREACHABLE
    assert failed("n", "s", ConnectError("n", "refused")).detail == "refused"
    assert failed("n", "s", CommandError("n", "x", 2, "bad")).status is Status.FAILED
    group: GroupResult[Outcome] = GroupResult(
        values={"a": Outcome("a", "s", Status.UNCHANGED)},
        errors={"b": ConnectError("b", "down"), "c": RuntimeError("bug")}, order=["a", "b", "c"])
    assert [o.status for o in outcomes_from("s", group)] == [
        Status.UNCHANGED, Status.UNREACHABLE, Status.FAILED]


@pytest.mark.parametrize(("statuses", "code"), [
    ([], 0),
    ([Status.CHANGED, Status.UNCHANGED, Status.SKIPPED], 0),
    ([Status.CHANGED, Status.FAILED], 1),
    ([Status.FAILED, Status.UNREACHABLE, Status.CHANGED], 3),
    ([Status.UNREACHABLE], 3),
])
def test_exit_code_of_outcomes(statuses: list[Status], code: int) -> None:
    outcomes = [Outcome(f"n{i}", "s", st) for i, st in enumerate(statuses)]
    assert exit_code_of(outcomes) == code
    assert worst(outcomes) in (None, Status.FAILED, Status.UNREACHABLE)
    with pytest.raises(typer.Exit) as info:
        finish(outcomes)
    assert info.value.exit_code == code


@pytest.mark.parametrize(("err", "code"), [
    (InventoryError("inv.yaml", [("nodes", "missing")]), 2),
    (UsageError("bad", "--node"), 2),
    (ConnectError("n1", "refused"), 3),
    (NodesFailed("x", {"n1": ConnectError("n1", "refused"), "n2": StepError("s", "m")}), 3),
    (NodesFailed("x", {"n2": StepError("s", "m")}), 1),
    (StepError("s", "m"), 1),
    (KeyboardInterrupt(), 130),
])
def test_exit_code_for_errors(err: BaseException, code: int) -> None:
    assert exit_code_for(err) == code
