"""`start`'s stage list driven with fake nodes: what a failure names, what the rollback removes,
and a second start of a running cluster changing nothing.

The cluster lock (its own tests run the real one on the testbed), Ray's wait for the GCS
and the HTTP readiness probe are stood in for; every node command is a FakeConnection's.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import ClassVar

import pytest

from dgxcluster.core.endpoint import READY, EndpointProbe
from dgxcluster.core.nodepaths import NodePaths
from dgxcluster.core.progress import RecordingProgress
from dgxcluster.core.session import Session
from dgxcluster.core.steps import Status
from dgxcluster.inventory import parse_inventory
from dgxcluster.remote.connection import Connection
from dgxcluster.serving import start as start_mod
from dgxcluster.serving.executors import native as native_mod
from dgxcluster.serving.executors import ray as ray_mod
from dgxcluster.serving.executors.native import NativeExecutor
from dgxcluster.serving.executors.ray import RayExecutor
from dgxcluster.serving.start import StartFailed, StartOptions, stages, start
from tests.fakes import FakeConnection, Reply


class FakeLock:
    events: ClassVar[list[str]] = []

    def __init__(self, conn: object, path: str, command: str, **_kw: object) -> None:
        self.shown = f"{path} ({command})"

    def acquire(self) -> None:
        FakeLock.events.append("acquire")

    def release(self) -> None:
        FakeLock.events.append("release")


class ModelCheck:
    """A NodeCheck (serving.preflight) as the models capability would hand it in."""

    label = "org/tiny"
    skip_reason = ""

    def __init__(self, missing: set[str]) -> None:
        self.missing = missing
        self.read_on: list[str] = []

    def read(self, conn: Connection, paths: NodePaths) -> object:
        self.read_on.append(conn.node)
        return conn.node not in self.missing

    def judge(self, answers: Mapping[str, object]) -> dict[str, tuple[bool, str]]:
        return {n: (bool(ok), "model org/tiny complete" if ok else
                    "model org/tiny is not complete here; run `dgxcluster model sync org/tiny`")
                for n, ok in answers.items()}


@pytest.fixture(autouse=True)
def stand_ins(monkeypatch: pytest.MonkeyPatch) -> None:
    FakeLock.events = []
    monkeypatch.setattr(start_mod, "ClusterLock", FakeLock)
    monkeypatch.setattr(ray_mod.raywait, "wait_head", lambda *_a, **_k: 0.5)


@pytest.fixture
def inv_text(tmp_path: Path) -> str:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM base\n")
    return (f"cluster: c\nnodes:\n  - {{name: a, host: 10.0.0.1, fabric_ip: 192.0.2.1}}\n"
            f"  - {{name: b, host: 10.0.0.2, fabric_ip: 192.0.2.2}}\n"
            f"image: {{name: t/img, context: {ctx}}}\ncontainer: {{gpus: none}}\n"
            f"serve: {{model: org/tiny}}\n")


def _gather(ps: str = "", docker_ok: bool = True) -> Reply:
    body = ps if docker_ok else "Cannot connect to the Docker daemon at unix:///run/docker.sock"
    return Reply(stdout=f"@@home\n/root\n@@rc 0\n@@ps\n{body}\n@@rc {0 if docker_ok else 1}\n"
                        "@@image\nsha256:abc\n@@rc 0\n@@ss\n@@rc 0\n")


def _running(name: str, role: str, config: str) -> str:
    return json.dumps({"ID": f"id-{name}", "Names": name, "Image": "t/img", "State": "running",
                       "Status": "Up 5 minutes", "Labels": f"dgxcluster.cluster=c,"
                       f"dgxcluster.role={role},dgxcluster.config={config}"})


def _session(inv_text: str, fakes: dict[str, FakeConnection], tmp: Path) -> Session:
    return Session.open(parse_inventory(inv_text, environ={}), factory=lambda s: fakes[s.name],
                        environ={}, log_dir=tmp / "logs")


def test_the_stages_are_declared_in_order() -> None:
    assert [s.name for s in stages(RayExecutor())] == [
        "preflight", "ray-head", "ray-workers", "ray-ready", "vllm"]
    assert [s.name for s in stages(NativeExecutor())] == [
        "preflight", "headless", "rank0", "vllm-ready"]


def test_a_preflight_problem_fails_there_and_changes_nothing(inv_text: str, tmp_path: Path) -> None:
    fakes = {"a": FakeConnection("a").on("@@home", _gather()),
             "b": FakeConnection("b").on("@@home", _gather(docker_ok=False))}
    check = ModelCheck(missing={"a"})
    with pytest.raises(StartFailed) as info:
        start(_session(inv_text, fakes, tmp_path), StartOptions(model_check=check),
              RecordingProgress())
    err = info.value
    assert err.step == "preflight" and sorted(err.errors) == ["a", "b"]
    assert "docker is not usable" in str(err) and "model sync org/tiny" in str(err)
    assert "nothing was changed" in str(err)
    assert sorted(check.read_on) == ["a", "b"]  # every problem is found, not the first only
    assert not any("run" in c and "docker" in c for f in fakes.values() for c in f.calls)
    assert FakeLock.events == ["acquire", "release"]
    got = {(o.node, o.step): o.status for o in err.outcomes}
    assert got[("a", "lock")] is Status.CHANGED and got[("b", "preflight")] is Status.FAILED


def test_a_worker_that_fails_to_start_rolls_back_the_head(inv_text: str, tmp_path: Path) -> None:
    fakes = {"a": FakeConnection("a").on("@@home", _gather()),
             "b": FakeConnection("b").on("@@home", _gather())
             .on(r"^docker run", Reply(exit_code=125, stderr="port is already allocated"))}
    with pytest.raises(StartFailed) as info:
        start(_session(inv_text, fakes, tmp_path), StartOptions(model_check=ModelCheck(set())),
              RecordingProgress())
    err = info.value
    assert err.step == "ray-workers" and list(err.errors) == ["b"]
    assert "port is already allocated" in str(err)
    assert ["docker", "rm", "-f", "-v", "dgxc-c-head"] in fakes["a"].calls  # rolled back
    head_env = next(p for p in fakes["a"].files if p.endswith(".env"))
    assert fakes["a"].modes[head_env] == 0o600
    assert ["rm", "-f", head_env] in fakes["a"].calls
    assert "rolled back what this start created" in str(err)
    steps = [(o.node, o.step, o.status) for o in err.outcomes]
    assert ("a", "ray-head", Status.CHANGED) in steps and ("b", "ray-workers", Status.FAILED) in steps


def test_the_same_config_running_and_ready_is_left_alone(inv_text: str, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    home = Reply(stdout="/root")
    dry = {n: FakeConnection(n).on("HOME", home) for n in ("a", "b")}
    config = start(_session(inv_text, dry, tmp_path), StartOptions(dry_run=True)).config
    fakes = {"a": FakeConnection("a").on("@@home", _gather(_running("dgxc-c-head", "head", config))),
             "b": FakeConnection("b").on("@@home", _gather(_running("dgxc-c-worker", "worker",
                                                                    config)))}
    monkeypatch.setattr(start_mod.vllm, "ready",
                        lambda *_a: EndpointProbe("http://10.0.0.1:8000", READY, 200, ["m"]))
    report = start(_session(inv_text, fakes, tmp_path), StartOptions(model_check=ModelCheck(set())),
                   RecordingProgress())
    assert report.already_running
    assert [(o.node, o.status) for o in report.outcomes if o.step == "start"] == [
        ("a", Status.UNCHANGED), ("b", Status.UNCHANGED)]
    assert all(len(f.calls) == 1 for f in fakes.values())  # the preflight read, nothing else
    assert FakeLock.events == ["acquire", "release"]
