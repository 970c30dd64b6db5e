"""`start`'s stage list driven with fake nodes: what a failure names, what the rollback removes,
and a second start of a running cluster changing nothing.

The cluster lock (its own tests run the real one on the testbed), Ray's wait for the GCS
and the HTTP readiness probe are stood in for; every node command is a FakeConnection's.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
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

    def __init__(self, conn: object, state_dir: str, cluster: str, command: str,
                 **_kw: object) -> None:
        self.shown = f"the lock of cluster {cluster} ({command})"

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
        "preflight", "ray-head", "ray-workers", "ray-ready", "vllm", "supervise", "persist"]
    assert [s.name for s in stages(NativeExecutor())] == [
        "preflight", "headless", "rank0", "vllm-ready", "supervise", "persist"]


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
    assert _settled_rm("dgxc-c-head") in fakes["a"].calls  # rolled back
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
    # the preflight read, nothing else; on every serving node also whether a watcher runs
    # (it must not with serve.restart: never; with Ray a worker's watches its Ray container)
    assert len(fakes["b"].calls) == 2 and len(fakes["a"].calls) == 2
    assert all("supervisor.pid" in " ".join(f.calls[1]) for f in fakes.values())
    assert [(o.node, o.step, o.detail) for o in report.outcomes if o.step == "supervise"] == [
        ("a", "supervise", "off (serve.restart: never)"),
        ("b", "supervise", "off (serve.restart: never)")]
    assert FakeLock.events == ["acquire", "release"]


def test_serve_nodes_leaving_a_node_idle_start_runs_on_the_serving_nodes_only(
        inv_text: str, tmp_path: Path) -> None:
    """TP 2 on a and b of three: c holds no Ray worker (Ray would count its GPU and could place
    a rank there), and no command at all runs on it."""
    text = inv_text.replace("serve: {model: org/tiny}",
                            "  - {name: c, host: 10.0.0.3, fabric_ip: 192.0.2.3}\n"
                            "serve: {model: org/tiny, tensor_parallel_size: 2, nodes: [a, b]}")
    lines = text.splitlines()
    c = next(ln for ln in lines if "name: c" in ln)
    lines.remove(c)
    lines.insert(next(i for i, ln in enumerate(lines) if "name: b" in ln) + 1, c)
    fakes = {n: FakeConnection(n).on("@@home", _gather()) for n in ("a", "b")}
    fakes["c"] = FakeConnection("c")
    fakes["b"].on(r"^docker run", Reply(exit_code=125, stderr="port is already allocated"))
    with pytest.raises(StartFailed) as info:
        start(_session("\n".join(lines) + "\n", fakes, tmp_path),
              StartOptions(model_check=ModelCheck(set())), RecordingProgress())
    assert info.value.step == "ray-workers" and list(info.value.errors) == ["b"]
    assert fakes["c"].calls == []
    assert {o.node for o in info.value.outcomes} == {"a", "b"}


# -- the Ray executor: workers join a head that is registered ----------------------------

def test_ray_workers_start_only_once_the_head_said_ray_runtime_started(
        inv_text: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker's `ray start` gives up if the head is not in the GCS yet ("No node info found
    for head node in GCS"): the workers' docker run waits for the head's started line."""
    monkeypatch.undo()  # the real wait for the head, not the autouse stand-in
    monkeypatch.setattr(start_mod, "ClusterLock", FakeLock)
    events: list[str] = []
    started = iter(["0", "0", "1"])

    def head_probe(_argv: list[str], _stdin: bytes | None) -> Reply:
        mark = next(started)
        events.append(f"head says started={mark}")
        return Reply(stdout=f"running 0\n{mark}\n")

    def run_worker(_argv: list[str], _stdin: bytes | None) -> Reply:
        events.append("worker docker run")
        return Reply(exit_code=125, stderr="stop here")

    monkeypatch.setattr(ray_mod.raywait, "POLL_S", 0.0)
    fakes = {"a": FakeConnection("a").on("@@home", _gather())
             .on("Ray runtime started", head_probe),
             "b": FakeConnection("b").on("@@home", _gather()).on(r"^docker run", run_worker)}
    with pytest.raises(StartFailed) as info:
        start(_session(inv_text, fakes, tmp_path), StartOptions(model_check=ModelCheck(set())),
              RecordingProgress())
    assert info.value.step == "ray-workers"
    assert events == ["head says started=0", "head says started=0", "head says started=1",
                      "worker docker run"]
    head = next(o for o in info.value.outcomes if o.step == "ray-head")
    assert "Ray started after" in head.detail


def test_a_head_whose_ray_exits_before_it_started_fails_ray_head_with_its_log(
        inv_text: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.undo()
    monkeypatch.setattr(start_mod, "ClusterLock", FakeLock)
    fakes = {"a": FakeConnection("a").on("@@home", _gather())
             .on("Ray runtime started", Reply(stdout="exited 1\n0\n"))
             .on("docker logs --tail", Reply(stdout="ValueError: bad --num-gpus\n")),
             "b": FakeConnection("b").on("@@home", _gather())}
    with pytest.raises(StartFailed) as info:
        start(_session(inv_text, fakes, tmp_path), StartOptions(model_check=ModelCheck(set())),
              RecordingProgress())
    assert info.value.step == "ray-head" and list(info.value.errors) == ["a"]
    assert "exited (status 1)" in str(info.value) and "bad --num-gpus" in str(info.value)
    assert not any(c[:2] == ["docker", "run"] for c in fakes["b"].calls)


# -- the native executor ---------------------------------------------------------------------

def _native(inv_text: str) -> str:
    return inv_text.replace("serve: {model: org/tiny}", "serve: {model: org/tiny, executor: native}")


def _rank(state: str = "running 0", code: str = "", ended: str = "", joined: int = 1,
          last: str = "INFO Loading safetensors checkpoint shards:  50% Completed | 1/2") -> Reply:
    return Reply(stdout=f"state={state}\nexit={code}\nended={ended}\npid=7\njoined={joined}\n"
                        f"last={last}\n")


def _not_ready_then_ready(monkeypatch: pytest.MonkeyPatch, rounds: int = 2) -> None:
    answers = iter([EndpointProbe("http://10.0.0.1:8000", "not serving", error="refused")]
                   * rounds + [EndpointProbe("http://10.0.0.1:8000", READY, 200, ["org/tiny"])] * 9)
    monkeypatch.setattr(start_mod.vllm, "ready", lambda *_a: next(answers))
    monkeypatch.setattr(start_mod.vllm, "POLL_S", 0.0)
    monkeypatch.setattr(native_mod, "WATCH_S", 0.0)


def test_native_starts_the_headless_ranks_first_then_rank_0_and_waits_for_it(
        inv_text: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _not_ready_then_ready(monkeypatch)
    events: list[str] = []

    def run(node: str) -> Callable[[list[str], bytes | None], Reply]:
        def reply(argv: list[str], _stdin: bytes | None) -> Reply:
            events.append(f"{node}: {' '.join(argv[argv.index('vllm'):][:3])}")
            return Reply(stdout="cid\n")
        return reply

    fakes = {n: FakeConnection(n).on("@@home", _gather()).on(r"^docker run", run(n))
             .on("state=", _rank()) for n in ("a", "b")}
    progress = RecordingProgress()
    report = start(_session(_native(inv_text), fakes, tmp_path),
                   StartOptions(model_check=ModelCheck(set())), progress)
    assert events == ["b: vllm serve org/tiny", "a: vllm serve org/tiny"]
    runs = {n: next(c for c in f.calls if c[:2] == ["docker", "run"]) for n, f in fakes.items()}
    assert "--headless" in runs["b"] and "--headless" not in runs["a"]
    assert runs["b"][runs["b"].index("--node-rank") + 1] == "1"
    assert "dgxcluster.executor=native" in runs["a"] and "ray" not in runs["a"]
    assert not any("docker exec" in " ".join(c) for c in fakes["a"].calls)  # no launch by exec
    steps = [(o.node, o.step, o.status) for o in report.outcomes]
    assert ("b", "headless", Status.CHANGED) in steps and ("a", "rank0", Status.CHANGED) in steps
    assert ("a", "vllm-ready", Status.CHANGED) in steps
    assert ("b", "vllm-ready: rank 1 joined") in [(n, m.split(" (")[0]) for n, m in progress.statuses]


def test_a_headless_rank_that_dies_while_loading_is_blamed_before_rank_0_and_all_is_removed(
        inv_text: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """b's vLLM exited first (SIGKILL); rank 0 followed (it lost its peer): the start fails
    at once naming b first, with its log, and the rollback removes every rank."""
    _not_ready_then_ready(monkeypatch, rounds=50)
    fakes = {"a": FakeConnection("a").on("@@home", _gather())
             .on("state=", _rank("exited 1", "1", "1700000000.900", 1,
                                 "RuntimeError: Engine core initialization failed."))
             .on(r"^tail -n 40", Reply(stdout="RuntimeError: NCCL error: remote process exited\n")),
             "b": FakeConnection("b").on("@@home", _gather())
             .on("state=", _rank("exited 137", "137", "1700000000.100", 1))
             .on(r"^tail -n 40", Reply(stdout="Loading safetensors checkpoint shards:  50%\n"))}
    with pytest.raises(StartFailed) as info:
        start(_session(_native(inv_text), fakes, tmp_path),
              StartOptions(model_check=ModelCheck(set())), RecordingProgress())
    err = info.value
    assert err.step == "vllm-ready" and list(err.errors) == ["b", "a"]
    text = str(err)
    assert text.index("b: step 'vllm-ready' failed: vLLM rank 1 exited with status 137") < \
        text.index("a: step 'vllm-ready' failed: vLLM rank 0 exited with status 1")
    assert "shards:  50%" in text and "remote process exited" in text
    for node, name in (("a", "dgxc-c-head"), ("b", "dgxc-c-worker")):
        assert _settled_rm(name) in fakes[node].calls


def test_native_already_running_and_ready_changes_nothing_but_a_rank_gone_restarts_all(
        inv_text: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = _native(inv_text)
    home = Reply(stdout="/root")
    dry = {n: FakeConnection(n).on("HOME", home) for n in ("a", "b")}
    config = start(_session(text, dry, tmp_path), StartOptions(dry_run=True)).config
    monkeypatch.setattr(start_mod.vllm, "ready",
                        lambda *_a: EndpointProbe("http://10.0.0.1:8000", READY, 200, ["org/tiny"]))
    fakes = {"a": FakeConnection("a").on("@@home", _gather(_running("dgxc-c-head", "head", config))),
             "b": FakeConnection("b").on("@@home", _gather(_running("dgxc-c-worker", "worker",
                                                                    config)))}
    report = start(_session(text, fakes, tmp_path), StartOptions(model_check=ModelCheck(set())),
                   RecordingProgress())
    # the preflight read; on every rank's node also whether a watcher runs (native: one per
    # node; none with serve.restart: never)
    assert report.already_running and len(fakes["b"].calls) == 2 and len(fakes["a"].calls) == 2
    assert all("supervisor.pid" in " ".join(fakes[n].calls[1]) for n in ("a", "b"))
    # b's rank is gone: rank 0 cannot take it back, so every rank starts again, rank 0 last
    fakes = {"a": FakeConnection("a").on("@@home", _gather(_running("dgxc-c-head", "head", config)))
             .on("state=", _rank()),
             "b": FakeConnection("b").on("@@home", _gather()).on("state=", _rank())}
    report = start(_session(text, fakes, tmp_path), StartOptions(model_check=ModelCheck(set())),
                   RecordingProgress())
    assert not report.already_running
    a_calls = [" ".join(c) for c in fakes["a"].calls]
    removed = a_calls.index("docker rm -f -v dgxc-c-head")
    assert removed < next(i for i, c in enumerate(a_calls) if c.startswith("docker run"))
    assert any(c[:2] == ["docker", "run"] for c in fakes["b"].calls)
    # every rank's node had its watcher paused before its rank started again (native: one
    # watcher per node), not only the head's
    for node in ("a", "b"):
        calls = [" ".join(c) for c in fakes[node].calls]
        paused = next(i for i, c in enumerate(calls) if "supervisor.pid" in c)
        assert paused < next(i for i, c in enumerate(calls) if c.startswith("docker run")), node


def test_switching_executor_is_a_different_configuration(inv_text: str, tmp_path: Path) -> None:
    home = Reply(stdout="/root")
    dry = {n: FakeConnection(n).on("HOME", home) for n in ("a", "b")}
    ray_config = start(_session(inv_text, dry, tmp_path), StartOptions(dry_run=True)).config
    fakes = {"a": FakeConnection("a").on("@@home", _gather(_running("dgxc-c-head", "head",
                                                                    ray_config))),
             "b": FakeConnection("b").on("@@home", _gather(_running("dgxc-c-worker", "worker",
                                                                    ray_config)))}
    with pytest.raises(StartFailed) as info:
        start(_session(_native(inv_text), fakes, tmp_path),
              StartOptions(model_check=ModelCheck(set())), RecordingProgress())
    assert info.value.step == "preflight"
    assert "a different configuration is running" in str(info.value) and "--restart" in str(info.value)
    assert all(len(f.calls) == 1 for f in fakes.values())


def test_with_no_head_running_another_configs_rank_is_a_leftover_this_start_replaces(
        inv_text: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A start that could not roll back a cut-off node left its rank running there: nothing
    serves (no head), so the next start replaces it, saying so, without --restart; while a
    head runs, the same worker is a different configuration and is refused."""
    text = _native(inv_text)
    monkeypatch.setattr(start_mod.vllm, "ready",
                        lambda *_a: EndpointProbe("http://10.0.0.1:8000", READY, 200, ["org/tiny"]))
    fakes = {"a": FakeConnection("a").on("@@home", _gather()).on("state=", _rank()),
             "b": FakeConnection("b").on("@@home", _gather(_running("dgxc-c-worker", "worker",
                                                                    "0ldc0nf1g")))
             .on("state=", _rank())}
    progress = RecordingProgress()
    report = start(_session(text, fakes, tmp_path), StartOptions(model_check=ModelCheck(set())),
                   progress)
    assert not report.already_running
    assert any("no head container runs: replacing what an earlier start left (b: dgxc-c-worker "
               "runs config 0ldc0nf1g)" in m for m in progress.messages), progress.messages
    b_calls = [" ".join(c) for c in fakes["b"].calls]
    removed = next(i for i, c in enumerate(b_calls) if "dgxc-c-worker" in c and " rm " in f" {c} ")
    assert removed < next(i for i, c in enumerate(b_calls) if c.startswith("docker run"))
    assert any(o.step.startswith("restart:") and o.node == "b" for o in report.outcomes)

    head_up = {"a": FakeConnection("a").on("@@home", _gather(_running("dgxc-c-head", "head",
                                                                      "0ldc0nf1g"))),
               "b": FakeConnection("b").on("@@home", _gather(_running("dgxc-c-worker", "worker",
                                                                      "0ldc0nf1g")))}
    with pytest.raises(StartFailed) as info:
        start(_session(text, head_up, tmp_path), StartOptions(model_check=ModelCheck(set())),
              RecordingProgress())
    assert "a different configuration is running" in str(info.value)
    assert all(len(f.calls) == 1 for f in head_up.values())


def test_native_dry_run_shows_each_ranks_vllm_serve_and_no_ray(inv_text: str, tmp_path: Path) -> None:
    home = Reply(stdout="/root")
    dry = {n: FakeConnection(n).on("HOME", home) for n in ("a", "b")}
    report = start(_session(_native(inv_text), dry, tmp_path), StartOptions(dry_run=True))
    shown = dict(report.dry_run)
    assert list(shown) == ["a (head)", "b (worker)"]
    head, worker = "\n".join(shown["a (head)"]), "\n".join(shown["b (worker)"])
    assert "vllm serve org/tiny" in head and "--node-rank 0" in head and "--headless" not in head
    assert "--node-rank 1" in worker and "--headless" in worker
    assert "ray start" not in head + worker and "docker exec" not in head


def test_native_preflight_refuses_a_busy_master_port_on_the_head(inv_text: str,
                                                                 tmp_path: Path) -> None:
    """Rank 0's torch store binds serve.master_port on the head: taken, start stops in
    preflight naming the port and the key; Ray's ports are not asked for."""
    ss = "LISTEN 0 4096 *:29501 *:*\nLISTEN 0 4096 *:6379 *:*"
    busy = Reply(stdout=_gather().stdout.replace("@@ss\n", f"@@ss\n{ss}\n"))
    fakes = {"a": FakeConnection("a").on("@@home", busy), "b": FakeConnection("b").on("@@home", _gather())}
    with pytest.raises(StartFailed) as info:
        start(_session(_native(inv_text), fakes, tmp_path),
              StartOptions(model_check=ModelCheck(set())), RecordingProgress())
    err = info.value
    assert err.step == "preflight" and list(err.errors) == ["a"]
    assert "port(s) 29501 already in use (29501 is vLLM rank 0's --master-port " \
        "(serve.master_port))" in str(err)
    assert "6379" not in str(err)  # Ray's port is no business of a native start
    assert not any(c[:2] == ["docker", "run"] for f in fakes.values() for c in f.calls)


def _settled_rm(name: str) -> list[str]:
    """The rollback's removal: once no `docker run --name NAME` is in flight on the node."""
    from dgxcluster.core.docker import _SETTLED_RM

    return ["sh", "-c", _SETTLED_RM, "sh", name]


def _dp(inv_text: str) -> str:
    """TP 1 x DP 2 on a and b: a replica on each node behind a's front end."""
    return inv_text.replace("serve: {model: org/tiny}", "serve: {model: org/tiny, executor: native, "
                            "tensor_parallel_size: 1, data_parallel_size: 2}")


def test_data_parallel_dry_run_shows_each_nodes_replica_flags(inv_text: str, tmp_path: Path) -> None:
    home = Reply(stdout="/root")
    dry = {n: FakeConnection(n).on("HOME", home) for n in ("a", "b")}
    report = start(_session(_dp(inv_text), dry, tmp_path), StartOptions(dry_run=True))
    shown = dict(report.dry_run)
    head, other = "\n".join(shown["a (head)"]), "\n".join(shown["b (worker)"])
    common = ("--distributed-executor-backend mp --data-parallel-size 2 --data-parallel-address "
              "192.0.2.1 --data-parallel-rpc-port 29550 --data-parallel-size-local 1")
    assert common in head and "--headless" not in head and "--data-parallel-start-rank" not in head
    assert f"{common} --data-parallel-start-rank 1 --headless" in other
    assert "--nnodes" not in head + other and "--master-port" not in head + other
    assert shown["a (head)"][0] == (
        "# ports that must be free here: 8000 (vLLM's API (serve.port)), 29550 (vLLM's "
        "--data-parallel-rpc-port, where the replicas join the head (serve.data_parallel_rpc_port))")


def test_data_parallel_preflight_refuses_a_busy_rpc_port_on_the_head(inv_text: str,
                                                                    tmp_path: Path) -> None:
    """The head's front end binds serve.data_parallel_rpc_port for the replicas: taken, start
    stops in preflight naming it; the master port is not asked for (no replica spans nodes)."""
    ss = "LISTEN 0 4096 *:29550 *:*\nLISTEN 0 4096 *:29501 *:*"
    busy = Reply(stdout=_gather().stdout.replace("@@ss\n", f"@@ss\n{ss}\n"))
    fakes = {"a": FakeConnection("a").on("@@home", busy), "b": FakeConnection("b").on("@@home", _gather())}
    with pytest.raises(StartFailed) as info:
        start(_session(_dp(inv_text), fakes, tmp_path),
              StartOptions(model_check=ModelCheck(set())), RecordingProgress())
    err = info.value
    assert err.step == "preflight" and list(err.errors) == ["a"]
    assert "port(s) 29550 already in use (29550 is vLLM's --data-parallel-rpc-port, where the " \
        "replicas join the head (serve.data_parallel_rpc_port))" in str(err)


def test_persist_on_a_running_cluster_installs_each_nodes_unit_and_off_removes_what_is_there(
        inv_text: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Persistence is not part of the config hash: the same config running and ready with
    --persist just gets its units (no restart); without it, a node holding one loses it."""
    home = Reply(stdout="/root")
    dry = {n: FakeConnection(n).on("HOME", home) for n in ("a", "b")}
    config = start(_session(inv_text, dry, tmp_path), StartOptions(dry_run=True)).config
    monkeypatch.setattr(start_mod.vllm, "ready",
                        lambda *_a: EndpointProbe("http://10.0.0.1:8000", READY, 200, ["m"]))
    who = Reply(stdout="@@who\n0 root root\n@@rc 0\n@@unit\n@@rc 1\n@@enabled\nnot-found\n@@rc 4\n"
                       "@@plan\n@@rc 1\n")
    fakes = {n: FakeConnection(n).on("@@home", _gather(_running(f"dgxc-c-{r}", r, config)))
             .on("@@who", who).on("systemctl enable", Reply(stdout="installed\n"))
             for n, r in (("a", "head"), ("b", "worker"))}
    on = Session.open(parse_inventory(inv_text, environ={"DGXCLUSTER_SERVE__PERSIST": "true"}),
                      factory=lambda s: fakes[s.name], environ={}, log_dir=tmp_path / "logs")
    report = start(on, StartOptions(model_check=ModelCheck(set())), RecordingProgress())
    assert report.already_running and report.config == config
    assert [(o.node, o.status) for o in report.outcomes if o.step == "persist"] == [
        ("a", Status.CHANGED), ("b", Status.CHANGED)]
    for n in ("a", "b"):
        assert fakes[n].modes["/root/.local/state/dgxcluster/c/boot-plan.json"] == 0o600
        assert any("systemctl enable" in " ".join(c) for c in fakes[n].calls)
        assert not any(c[:2] == ["docker", "run"] for c in fakes[n].calls)

    unit = "@@unit\npresent\n@@rc 0\n"
    off = {"a": FakeConnection("a").on("@@home", Reply(stdout=_gather(_running(
               "dgxc-c-head", "head", config)).stdout + unit))
           .on("systemctl disable", Reply(stdout="removed\n")),
           "b": FakeConnection("b").on("@@home", _gather(_running("dgxc-c-worker", "worker",
                                                                  config)))}
    report = start(_session(inv_text, off, tmp_path), StartOptions(model_check=ModelCheck(set())),
                   RecordingProgress())
    assert [(o.node, o.status, o.detail) for o in report.outcomes if o.step == "persist"] == [
        ("a", Status.CHANGED, "disabled and removed dgxcluster-c.service"),
        ("b", Status.UNCHANGED, "off (no unit installed)")]
    assert not any("systemctl" in " ".join(c) for c in off["b"].calls)  # no extra round trip
