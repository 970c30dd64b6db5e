"""Rollback removes exactly what a failed start created; teardown stops in the right order."""

from __future__ import annotations

from pathlib import Path

from dgxcluster.core.docker import _SETTLED_RM
from dgxcluster.core.nodepaths import NodePaths
from dgxcluster.core.progress import RecordingProgress
from dgxcluster.core.session import Session
from dgxcluster.errors import ConnectError, StepError
from dgxcluster.facts.docker_ps import ContainerInfo
from dgxcluster.inventory import parse_inventory
from dgxcluster.serving.start import StartFailed
from dgxcluster.serving.teardown import Created, Found, rollback, teardown
from tests.fakes import FakeConnection, Reply

INV = """\
cluster: c
nodes:
  - {name: a, host: 10.0.0.1, fabric_ip: 192.0.2.1}
  - {name: b, host: 10.0.0.2, fabric_ip: 192.0.2.2}
  - {name: d, host: 10.0.0.3, fabric_ip: 192.0.2.3}
serve: {model: m}
"""


def session(fakes: dict[str, FakeConnection], tmp: Path) -> Session:
    inv = parse_inventory(INV, environ={})
    return Session.open(inv, factory=lambda spec: fakes[spec.name], environ={}, log_dir=tmp)


def test_rollback_undoes_only_what_this_start_created(tmp_path: Path) -> None:
    fakes = {n: FakeConnection(n) for n in ("a", "b", "d")}
    fakes["b"].unreachable = "connection timed out"
    created = Created(containers={"a": "dgxc-c-head"},
                      env_files={"a": "/s/env/head.env", "b": "/s/env/worker.env"})
    lines = rollback(session(fakes, tmp_path), created, RecordingProgress())
    assert fakes["a"].calls == [["sh", "-c", _SETTLED_RM, "sh", "dgxc-c-head"],
                                ["rm", "-f", "/s/env/head.env"]]
    assert fakes["d"].calls == []  # untouched: this start made nothing there
    assert lines[0] == "a: removed dgxc-c-head; deleted /s/env/head.env"
    assert lines[1].startswith("b: could not roll back") and "/s/env/worker.env" in lines[1]
    assert "dgxcluster stop" in lines[1]


def test_start_failed_names_the_step_each_node_and_the_rollback() -> None:
    exc = StartFailed("ray-workers", {"b": ConnectError("b", "timed out")},
                      ["a: removed dgxc-c-head"], kept=False, outcomes=[])
    text = str(exc)
    assert text.startswith("start failed at step 'ray-workers':")
    assert "b: unreachable: timed out" in text
    assert "rolled back what this start created:\n  a: removed dgxc-c-head" in text
    assert exc.unreachable == ["b"]  # -> exit 3
    kept = StartFailed("vllm-ready", {"a": StepError("vllm-ready", "exited", "a")}, [], kept=True,
                       outcomes=[])
    assert "--keep-on-failure" in str(kept) and kept.unreachable == []


def test_teardown_stops_vllm_then_workers_then_head_then_removes(tmp_path: Path) -> None:
    fakes = {n: FakeConnection(n).on(r"docker exec dgxc-c-head", Reply(stdout="stopped\n"))
             for n in ("a", "b")}
    s = session(fakes, tmp_path)
    order: list[str] = []
    for f in fakes.values():
        original = f.run

        def spy(argv, _orig=original, _n=f.name, **kw):  # type: ignore[no-untyped-def]
            order.append(f"{_n}: {' '.join(str(a) for a in argv[:3])}")
            return _orig(argv, **kw)

        f.run = spy  # type: ignore[method-assign]

    def info(name: str, role: str) -> ContainerInfo:
        return ContainerInfo("id", name, "img", "running", "Up",
                             {"dgxcluster.cluster": "c", "dgxcluster.role": role})

    paths = NodePaths("/root", "~/.local/state/dgxcluster", "c")
    found = {"a": Found("a", paths, [info("dgxc-c-head", "head")], ["/x/head.env"]),
             "b": Found("b", paths, [info("dgxc-c-worker", "worker")], [])}
    outcomes = teardown(s, found, RecordingProgress())
    steps = [o.step for o in outcomes]
    assert steps.index("vllm-stop") < steps.index("stop-worker") < steps.index("stop-head")
    stops = [o for o in order if "docker stop" in o or "docker exec" in o]
    assert stops == ["a: docker exec dgxc-c-head", "b: docker stop -t", "a: docker stop -t"]
    assert any("docker rm -f" in o for o in order if o.startswith("a:"))
    assert any("docker rm -f" in o for o in order if o.startswith("b:"))
