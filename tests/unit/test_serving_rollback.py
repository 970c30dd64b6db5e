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


def test_settled_rm_waits_for_a_docker_run_that_became_a_process_after_it_first_looked(
        tmp_path: Path) -> None:
    """The race behind a leaked worker container: Ctrl-C as `docker run --name N` was sent;
    the rollback's first look finds no such process (sshd had not exec'd it yet), the
    `docker run` appears a moment later and creates N after a plain `rm -f`. The script (run
    here by sh, with pgrep, against a stand-in `docker` that records when it is called) must
    remove N only after that late process has ended."""
    import subprocess
    import sys

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls"
    fake = bin_dir / "docker"  # a test double of the docker CLI: records argv and when
    fake.write_text(f'#!/bin/sh\necho "$(date +%s.%N) $*" >> {calls}\n')
    fake.chmod(0o755)
    name = f"dgxc-settle-{tmp_path.name}"
    ended = tmp_path / "ended"
    body = f"import time; time.sleep(1.2); open({str(ended)!r}, 'w').write(repr(time.time()))"
    late = ("import os, sys, time; time.sleep(0.8); os.execv(sys.executable, "
            f"[sys.executable, '-c', {body!r}, '--name', {name!r}])")
    proc = subprocess.Popen([sys.executable, "-c", late])
    rm = subprocess.run(["sh", "-c", _SETTLED_RM, "sh", name], timeout=60,
                        env={"PATH": f"{bin_dir}:/usr/bin:/bin"})
    assert proc.wait(timeout=10) == 0 and rm.returncode == 0
    when, argv = calls.read_text().split(" ", 1)
    assert argv.strip() == f"rm -f -v {name}"
    assert float(when) > float(ended.read_text()), "rm -f ran while the late docker run lived"
