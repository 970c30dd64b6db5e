"""`start` checks vLLM's launch within seconds (issue 12): the container's user must be able to
write the log directory, the pid must be recorded, and each run's log is its own.

The launcher's shell snippets run here for real on a temporary directory (as the node runs
them); the node is a fake connection. The container user that cannot write the directory,
on a real testbed: tests/e2e/test_faults.py::test_container_user_that_cannot_write_the_log_fails_fast.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from dgxcluster.core.nodepaths import NodePaths
from dgxcluster.core.progress import RecordingProgress
from dgxcluster.errors import StepError
from dgxcluster.inventory import parse_inventory
from dgxcluster.remote.command import shell
from dgxcluster.serving import plan, vllm
from tests.fakes import FakeConnection, Reply

INV = parse_inventory(
    "cluster: demo\n"
    "nodes:\n  - {name: n1, host: 127.0.0.1, fabric_ip: 192.0.2.1}\n"
    "  - {name: n2, host: 127.0.0.2, fabric_ip: 192.0.2.2}\n"
    "serve: {model: Qwen/Qwen3-8B, port: 9}\n", environ={})
PATHS = NodePaths("/root", "~/.local/state/dgxcluster", "demo")
DENIED = Reply(exit_code=plan.LAUNCH_CHECK_EXIT,
               stderr="sh: 1: cannot create /var/log/dgxcluster/vllm.log: Permission denied\n"
                      "container user 1000:1000\n")


def test_a_container_user_that_cannot_write_the_log_dir_fails_before_the_launch() -> None:
    conn = FakeConnection("n1").on(r"^docker exec dgxc-demo-head sh", DENIED)
    with pytest.raises(StepError) as err:
        vllm.launch(conn, INV, PATHS)
    text = str(err.value)
    assert err.value.step == "vllm" and "n1" in text
    assert "container user 1000:1000" in text and "Permission denied" in text
    assert PATHS.log_dir in text and "extra_args --user" in text
    assert not any("exec -d" in " ".join(c) for c in conn.calls)  # nothing launched


def test_a_writable_log_dir_launches_detached_after_the_check() -> None:
    conn = FakeConnection("n1").on("", Reply())
    vllm.launch(conn, INV, PATHS)
    assert [c[:3] for c in conn.calls] == [["docker", "exec", "dgxc-demo-head"],
                                           ["docker", "exec", "-d"]]


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.now += s


def test_no_pid_recorded_fails_after_the_grace_not_the_ready_timeout() -> None:
    clock = Clock()
    conn = (FakeConnection("n1").on("state=", Reply(stdout="state=running 0\nexit=\npid=\nlast=\n"))
            .on(r"^tail ", Reply(stdout="")))
    with pytest.raises(StepError) as err:
        vllm.wait_ready(conn, INV, PATHS, 1800, RecordingProgress(), sleep=clock.sleep,
                        clock=clock, get=lambda _u, _t: (_ for _ in ()).throw(
                            ConnectionRefusedError("refused")))
    assert "vLLM did not launch: no pid in" in str(err.value)
    assert f"{PATHS.log_dir}/vllm.pid" in str(err.value)
    assert vllm.LAUNCH_GRACE_S < clock.now < vllm.LAUNCH_GRACE_S + 1  # not 1800 s


def test_a_recorded_pid_keeps_waiting_past_the_grace() -> None:
    clock = Clock()
    conn = (FakeConnection("n1").on("state=", Reply(stdout="state=running 0\nexit=\npid=42\n"
                                                    "last=Loading weights\n"))
            .on(r"^tail ", Reply(stdout="Loading weights")))
    with pytest.raises(StepError, match="not ready within 60s"):
        vllm.wait_ready(conn, INV, PATHS, 60, RecordingProgress(), sleep=clock.sleep,
                        clock=clock, get=lambda _u, _t: (_ for _ in ()).throw(
                            ConnectionRefusedError("refused")))
    assert clock.now > 60


def _sh(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=False)


def test_each_run_has_its_own_log_the_previous_kept_as_log_1(tmp_path: Path) -> None:
    paths = NodePaths("/root", str(tmp_path), "demo")
    logs = Path(paths.log_dir)
    logs.mkdir(parents=True)
    (logs / "vllm.log").write_text("the previous run\n")
    (logs / "vllm.pid").write_text("41\n")
    (logs / "vllm.exit").write_text("1\n")
    conn = FakeConnection("n1")
    conn.on("", lambda argv, _stdin: Reply(exit_code=_sh(argv).returncode))
    vllm.clear_state(conn, paths)
    assert sorted(p.name for p in logs.iterdir()) == ["vllm.log.1"]
    assert (logs / "vllm.log.1").read_text() == "the previous run\n"
    vllm.clear_state(conn, paths)  # nothing to rotate: fine
    check = plan.launch_check(INV)
    assert check[:3] == ["docker", "exec", "dgxc-demo-head"]
    res = _sh([*check[3:-1], str(logs)])  # the snippet as the container runs it
    assert res.returncode == 0, res.stderr
    assert sorted(p.name for p in logs.iterdir()) == ["vllm.log", "vllm.log.1"]
    assert (logs / "vllm.log").read_text() == ""
    res = _sh([*check[3:-1], str(logs / "missing")])
    assert res.returncode == plan.LAUNCH_CHECK_EXIT and "container user " in res.stderr


def test_a_quiet_log_shows_its_age_in_the_waiting_line_and_never_fails(tmp_path: Path) -> None:
    """The probe's snippet runs here as the node runs it; vllm.log untouched for 4 minutes is
    reported as quiet (vLLM may be loading weights), and the wait goes on to the timeout."""
    paths = NodePaths("/root", str(tmp_path), "demo")
    logs = Path(paths.log_dir)
    logs.mkdir(parents=True)
    fresh = vllm.parse_probe(_sh(shell(vllm._PROBE, "dgxc-q-none", paths.log_dir)).stdout)
    assert fresh.log_age_s is None and vllm.quiet_note(fresh) == ""  # no log yet
    log = logs / "vllm.log"
    log.write_text("Loading safetensors checkpoint shards:  40% Completed\n")
    old = log.stat().st_mtime - 4 * 60 - 5
    os.utime(log, (old, old))
    seen = vllm.parse_probe(_sh(shell(vllm._PROBE, "dgxc-q-none", paths.log_dir)).stdout)
    assert seen.log_age_s is not None and 4 * 60 <= seen.log_age_s < 5 * 60
    assert vllm.quiet_note(seen) == " (vllm.log quiet for 4m)"
    assert seen.last_line.startswith("Loading safetensors")

    clock = Clock()
    reply = "state=running 0\nexit=\npid=42\nlast=Loading weights\nage=245\n"
    conn = (FakeConnection("n1").on("state=", Reply(stdout=reply))
            .on(r"^tail ", Reply(stdout="Loading weights")))
    progress = RecordingProgress()
    with pytest.raises(StepError, match="not ready within 600s"):
        vllm.wait_ready(conn, INV, PATHS, 600, progress, sleep=clock.sleep, clock=clock,
                        get=lambda _u, _t: (_ for _ in ()).throw(ConnectionRefusedError("x")))
    assert clock.now > 600  # silence is shown, never a failure
    assert progress.statuses[0] == ("n1", "vllm-ready: 0s (vllm.log quiet for 4m): "
                                          "Loading weights")
