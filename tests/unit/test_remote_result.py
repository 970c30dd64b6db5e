"""A command's Result and a fan-out's GroupResult: the caller decides what a failure is."""

from __future__ import annotations

import pytest

from dgxcluster.errors import CommandError, ConnectError, NodesFailed, StepError
from dgxcluster.remote.result import GroupResult, Result


def test_check_raises_with_the_whole_result() -> None:
    ok = Result("n1", "true", 0, "out", "", 0.1234)
    assert ok.check() is ok and ok.to_json()["duration_s"] == 0.123
    bad = Result("n1", "false x", 3, "partial", "boom\n", 0.5)
    with pytest.raises(CommandError) as info:
        bad.check()
    e = info.value
    assert (e.node, e.argv, e.exit_code, e.stderr, e.stdout) == ("n1", "false x", 3, "boom\n",
                                                                 "partial")
    assert str(e).startswith("n1: `false x` exited 3")


def test_group_keeps_every_node_and_raises_one_combined_error() -> None:
    g: GroupResult[int] = GroupResult(values={"a": 1}, errors={
        "b": ConnectError("b", "refused"), "c": StepError("s", "broke", "c")}, order=["a", "b", "c"])
    assert list(g) == ["a", "b", "c"] and len(g) == 3 and g["a"] == 1
    assert set(g.unreachable) == {"b"} and set(g.failed) == {"c"} and not g.ok
    with pytest.raises(NodesFailed) as info:
        g.raise_for_failures("probe")
    assert info.value.unreachable == ["b"]
    assert "probe failed on 2 node(s)" in str(info.value) and "b: unreachable: refused" in str(info.value)


def test_one_failure_is_raised_as_itself() -> None:
    err = StepError("s", "broke", "c")
    g: GroupResult[int] = GroupResult(errors={"c": err}, order=["c"])
    with pytest.raises(StepError) as info:
        g.raise_for_failures("x")
    assert info.value is err
    GroupResult[int](values={"a": 1}, order=["a"]).raise_for_failures("x")  # nothing to raise
