"""`stop` with fake nodes: discover, then teardown in order; unreachable nodes are named."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

import pytest

from dgxcluster.cli.exitcodes import exit_code_of
from dgxcluster.core.progress import RecordingProgress
from dgxcluster.core.session import Session
from dgxcluster.core.steps import Status
from dgxcluster.errors import ConnectError
from dgxcluster.inventory import parse_inventory
from dgxcluster.serving import stop as stop_mod
from dgxcluster.serving.stop import stop
from tests.fakes import FakeConnection, Reply

INV = """\
cluster: c
nodes:
  - {name: a, host: 10.0.0.1, fabric_ip: 192.0.2.1}
  - {name: b, host: 10.0.0.2, fabric_ip: 192.0.2.2}
serve: {model: m}
"""


class FakeLock:
    """Stands for `ClusterLock` (its own tests use the real one on the testbed)."""

    taken: ClassVar[list[str]] = []
    refuse: ClassVar[str | None] = None

    def __init__(self, conn: object, state_dir: str, cluster: str, command: str,
                 **_kw: object) -> None:
        self.command = command

    def acquire(self) -> None:
        if FakeLock.refuse:
            raise ConnectError("a", FakeLock.refuse)
        FakeLock.taken.append(self.command)

    def release(self) -> None:
        FakeLock.taken.append("released")


@pytest.fixture(autouse=True)
def fake_lock(monkeypatch: pytest.MonkeyPatch) -> None:
    FakeLock.taken, FakeLock.refuse = [], None
    monkeypatch.setattr(stop_mod, "ClusterLock", FakeLock)


def _ps(*containers: tuple[str, str, str]) -> str:
    return "\n".join(json.dumps({"ID": f"id-{n}", "Names": n, "Image": "img", "State": state,
                                 "Status": "Up 1 minute",
                                 "Labels": f"dgxcluster.cluster=c,dgxcluster.role={role}"})
                     for n, role, state in containers)


def _discover(ps: str, env: str = "") -> Reply:
    return Reply(stdout=f"@@home\n/root\n@@rc 0\n@@ps\n{ps}\n@@rc 0\n@@env\n{env}\n@@rc 0\n")


def _session(fakes: dict[str, FakeConnection], tmp: Path) -> Session:
    return Session.open(parse_inventory(INV, environ={}), factory=lambda s: fakes[s.name],
                        environ={}, log_dir=tmp)


def test_nothing_of_this_cluster_anywhere_changes_nothing(tmp_path: Path) -> None:
    fakes = {n: FakeConnection(n).on("@@home", _discover("")) for n in ("a", "b")}
    report = stop(_session(fakes, tmp_path), progress=RecordingProgress())
    assert report.nothing and report.outcomes == [] and not report.unreachable
    assert all(len(f.calls) == 1 for f in fakes.values())  # discover only
    assert FakeLock.taken == ["stop", "released"]


def test_stops_vllm_workers_head_then_cleans_each_node(tmp_path: Path) -> None:
    fakes = {
        "a": FakeConnection("a").on("@@home", _discover(
            _ps(("dgxc-c-head", "head", "running")), "/root/.local/state/dgxcluster/c/env/head.env"))
        .on("docker exec dgxc-c-head", Reply(stdout="stopped\n")),
        "b": FakeConnection("b").on("@@home", _discover(_ps(("dgxc-c-worker", "worker", "running")))),
    }
    report = stop(_session(fakes, tmp_path), progress=RecordingProgress())
    steps = [(o.node, o.step, o.status) for o in report.outcomes]
    assert ("a", "vllm-stop", Status.CHANGED) in steps
    assert ("b", "stop-worker", Status.CHANGED) in steps and ("a", "stop-head", Status.CHANGED) in steps
    clean = {o.node: o.detail for o in report.outcomes if o.step == "clean"}
    assert clean["a"] == "removed dgxc-c-head; deleted 1 env-file(s)"
    assert clean["b"] == "removed dgxc-c-worker"
    assert ["docker", "rm", "-f", "-v", "dgxc-c-worker"] in fakes["b"].calls
    assert exit_code_of(report.outcomes) == 0


def test_an_unreachable_node_is_named_and_the_reachable_one_still_cleaned(tmp_path: Path) -> None:
    fakes = {"a": FakeConnection("a", unreachable="connection timed out"),
             "b": FakeConnection("b").on("@@home", _discover(_ps(("dgxc-c-worker", "worker",
                                                                   "exited"))))}
    report = stop(_session(fakes, tmp_path), progress=RecordingProgress())
    assert report.unreachable == {"a": "connection timed out"}
    assert ("a", "discover", Status.UNREACHABLE) in [(o.node, o.step, o.status)
                                                      for o in report.outcomes]
    assert ["docker", "rm", "-f", "-v", "dgxc-c-worker"] in fakes["b"].calls
    assert exit_code_of(report.outcomes) == 3


def test_without_the_head_the_lock_is_skipped_and_said_why(tmp_path: Path) -> None:
    FakeLock.refuse = "no route to host"
    fakes = {n: FakeConnection(n).on("@@home", _discover("")) for n in ("a", "b")}
    report = stop(_session(fakes, tmp_path), progress=RecordingProgress())
    assert report.lock_skipped == "head a unreachable (no route to host)"
    assert report.nothing and FakeLock.taken == []


def test_docker_down_on_a_node_fails_that_node(tmp_path: Path) -> None:
    down = Reply(stdout="@@home\n/root\n@@rc 0\n@@ps\nCannot connect to the Docker daemon\n"
                        "@@rc 1\n@@env\n@@rc 0\n")
    fakes = {"a": FakeConnection("a").on("@@home", down),
             "b": FakeConnection("b").on("@@home", _discover(""))}
    report = stop(_session(fakes, tmp_path), progress=RecordingProgress())
    [o] = [o for o in report.outcomes if o.node == "a"]
    assert o.status is Status.FAILED and "docker is not usable" in o.detail
    assert exit_code_of(report.outcomes) == 1


def _native_ps(*containers: tuple[str, str, str]) -> str:
    return _ps(*containers).replace("dgxcluster.role=", "dgxcluster.executor=native,dgxcluster.role=")


def _noting(order: list[str]) -> Callable[[str, Reply], object]:
    """A reply that also notes, in `order`, that its command ran."""
    def note(what: str, reply: Reply) -> object:
        def respond(_argv: list[str], _stdin: bytes | None) -> Reply:
            order.append(what)
            return reply
        return respond
    return note


def test_a_native_cluster_stops_rank_0_then_the_headless_ranks_then_removes_them(
        tmp_path: Path) -> None:
    order: list[str] = []
    note = _noting(order)

    fakes = {
        "a": FakeConnection("a").on("@@home", _discover(_native_ps(("dgxc-c-head", "head", "running"))))
        .on("docker exec dgxc-c-head", note("rank 0 SIGTERM", Reply(stdout="stopped\n")))
        .on("docker stop", note("a docker stop", Reply())),
        "b": FakeConnection("b").on("@@home", _discover(_native_ps(("dgxc-c-worker", "worker",
                                                                    "running"))))
        .on("docker exec dgxc-c-worker", note("rank 1 SIGTERM", Reply(stdout="stopped\n")))
        .on("docker stop", note("b docker stop", Reply())),
    }
    report = stop(_session(fakes, tmp_path), progress=RecordingProgress())
    assert order[:2] == ["rank 0 SIGTERM", "rank 1 SIGTERM"]
    assert set(order[2:]) == {"a docker stop", "b docker stop"}
    details = {(o.node, o.step): o.detail for o in report.outcomes}
    assert details[("b", "vllm-stop")] == "headless rank: exited after SIGTERM"
    assert ["docker", "rm", "-f", "-v", "dgxc-c-worker"] in fakes["b"].calls
    assert exit_code_of(report.outcomes) == 0


def test_a_native_rank_whose_container_ended_with_its_vllm_counts_as_stopped(tmp_path: Path) -> None:
    """rank 0's container ends when its vLLM does, taking the `docker exec` that stopped it
    along: that is a stop, not a failure."""
    fakes = {
        "a": FakeConnection("a").on("@@home", _discover(_native_ps(("dgxc-c-head", "head", "running"))))
        .on("docker exec dgxc-c-head", Reply(exit_code=137))
        .on("docker inspect", Reply(stdout="exited 0\n")),
        "b": FakeConnection("b").on("@@home", _discover("")),
    }
    report = stop(_session(fakes, tmp_path), progress=RecordingProgress())
    [o] = [o for o in report.outcomes if o.step == "vllm-stop"]
    assert (o.node, o.status, o.detail) == ("a", Status.CHANGED, "exited after SIGTERM")
    assert exit_code_of(report.outcomes) == 0


def test_stop_removes_the_boot_unit_first_even_with_no_containers_left(tmp_path: Path) -> None:
    """A reboot after `stop` must start nothing: the unit goes also where nothing runs."""
    unit = "@@unit\npresent\n@@rc 0\n"
    fakes = {"a": FakeConnection("a").on("@@home", Reply(stdout=_discover("").stdout + unit))
             .on("systemctl disable", Reply(stdout="removed\n")),
             "b": FakeConnection("b").on("@@home", _discover(""))}
    report = stop(_session(fakes, tmp_path))
    assert not report.nothing
    assert [(o.node, o.step, o.status, o.detail) for o in report.outcomes][:1] == [
        ("a", "persist", Status.CHANGED, "disabled and removed dgxcluster-c.service")]
    assert any("systemctl disable" in " ".join(c) for c in fakes["a"].calls)
    assert not any("systemctl" in " ".join(c) for c in fakes["b"].calls[1:])


def test_a_native_cluster_stops_every_nodes_watcher_before_any_rank(tmp_path: Path) -> None:
    """Native: a watcher per node (serve.restart: on-failure); each is stopped first, or it
    would bring back the rank the next steps stop."""
    order: list[str] = []
    note = _noting(order)

    fakes = {
        "a": FakeConnection("a").on("@@home", _discover(_native_ps(("dgxc-c-head", "head", "running"))))
        .on(r"supervisor\.pid", note("a watcher", Reply(stdout="stopped\n")))
        .on("docker exec dgxc-c-head", note("rank 0 SIGTERM", Reply(stdout="stopped\n"))),
        "b": FakeConnection("b").on("@@home", _discover(_native_ps(("dgxc-c-worker", "worker",
                                                                    "running"))))
        .on(r"supervisor\.pid", note("b watcher", Reply(stdout="stopped\n")))
        .on("docker exec dgxc-c-worker", note("rank 1 SIGTERM", Reply(stdout="stopped\n"))),
    }
    report = stop(_session(fakes, tmp_path), progress=RecordingProgress())
    assert set(order[:2]) == {"a watcher", "b watcher"}
    assert order[2:4] == ["rank 0 SIGTERM", "rank 1 SIGTERM"]
    assert [(o.node, o.detail) for o in report.outcomes if o.step == "supervise"] == [
        ("a", "stopped the watcher"), ("b", "stopped the watcher")]
