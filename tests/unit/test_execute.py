"""`exec`'s capability: one command everywhere, every node's result kept, outcomes per node."""

from __future__ import annotations

from pathlib import Path

import pytest

from dgxcluster.cli.exitcodes import exit_code_of
from dgxcluster.core.session import Session
from dgxcluster.core.steps import Status
from dgxcluster.errors import CommandTimeout, UsageError
from dgxcluster.execute import KEEP_BYTES, outcomes, prefixed, run_everywhere
from dgxcluster.inventory import parse_inventory
from tests.fakes import FakeConnection, Reply

INV = "cluster: c\nnodes:\n" + "".join(
    f"  - {{name: n{i}, host: 10.0.0.{i}, fabric_ip: 192.0.2.{i}}}\n" for i in (1, 2, 3))


def _session(fakes: dict[str, FakeConnection], tmp: Path) -> Session:
    return Session.open(parse_inventory(INV, environ={}), factory=lambda s: fakes[s.name],
                        environ={}, log_dir=tmp)


def test_runs_argv_on_the_selected_nodes_in_inventory_order(tmp_path: Path) -> None:
    fakes = {f"n{i}": FakeConnection(f"n{i}").on("uname", Reply(stdout=f"Linux n{i}\n"))
             for i in (1, 2, 3)}
    blocks: list[tuple[str, str, bytes]] = []
    res = run_everywhere(_session(fakes, tmp_path), ["uname", "-a"], ["n3", "n1"],
                         on_output=lambda n, s, block: blocks.append((n, s, block)))
    assert list(res) == ["n1", "n3"] and fakes["n2"].calls == []
    assert fakes["n1"].calls == [["uname", "-a"]]
    assert sorted(blocks) == [("n1", "stdout", b"Linux n1\n"), ("n3", "stdout", b"Linux n3\n")]
    assert [o.status for o in outcomes(res)] == [Status.CHANGED, Status.CHANGED]


def test_an_unknown_node_is_refused_before_anything_runs(tmp_path: Path) -> None:
    fakes = {f"n{i}": FakeConnection(f"n{i}") for i in (1, 2, 3)}
    with pytest.raises(UsageError, match="--node"):
        run_everywhere(_session(fakes, tmp_path), ["true"], ["n9"])
    assert all(f.calls == [] for f in fakes.values())


def test_outcomes_say_exit_code_timeout_and_unreachable(tmp_path: Path) -> None:
    fakes = {"n1": FakeConnection("n1").on("", Reply(exit_code=4, stderr="nope")),
             "n2": FakeConnection("n2").on("", Reply(raises=CommandTimeout("n2", "sleep 9", 1))),
             "n3": FakeConnection("n3", unreachable="no route to host")}
    res = run_everywhere(_session(fakes, tmp_path), ["sleep", "9"])
    got = {o.node: (o.status, o.detail) for o in outcomes(res)}
    assert got["n1"] == (Status.FAILED, "exited 4")
    assert got["n2"][0] is Status.FAILED and "timed out" in got["n2"][1]
    assert got["n3"] == (Status.UNREACHABLE, "no route to host")
    assert exit_code_of(outcomes(res)) == 3
    assert exit_code_of([o for o in outcomes(res) if o.node != "n3"]) == 1


def test_output_is_printed_pdsh_style_each_line_prefixed() -> None:
    first, rest = prefixed("n1", b"a\n\nb\n")
    assert first + bytes(rest) == b"n1: a\nn1: \nn1: b\n"
    assert prefixed("n1", b"") == (b"", memoryview(b""))


def test_each_node_keeps_only_the_tail_of_a_big_output_and_says_so(tmp_path: Path) -> None:
    big = "x" * 99 + "\n"
    fakes = {"n1": FakeConnection("n1").on("", Reply(stdout=big * 30000, stderr="e\n"))}
    seen = [0]
    res = run_everywhere(_session(fakes, tmp_path), ["cat", "big"], ["n1"],
                         on_output=lambda n, s, block: seen.__setitem__(0, seen[0] + len(block)))
    r = res.values["n1"]
    assert seen[0] == 3_000_002  # everything was handed on live
    assert len(r.stdout) == KEEP_BYTES and r.stdout.endswith(big) and r.stderr == "e\n"
    assert r.truncated and r.dropped == {"stdout": 3_000_000 - KEEP_BYTES}
    assert r.to_json()["dropped_bytes"] == {"stdout": 3_000_000 - KEEP_BYTES, "stderr": 0}
