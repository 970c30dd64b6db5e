"""The cluster lock over a held-open remote process (fake connection), and the node-side
program behind it run here as a node runs it (two holders, a kill, the holder's words).
Two operators with different SSH users on the testbed: tests/e2e/test_operators.py."""

from __future__ import annotations

import os
import signal
import subprocess
import uuid

import pytest

from dgxcluster.core import ship
from dgxcluster.errors import ConnectError, LockHeld, StepError
from dgxcluster.remote.process import KILLED
from dgxcluster.serving.lock import HELD_EXIT, ClusterLock
from tests import nodeside
from tests.children import spawn
from tests.fakes import FakeConnection, Reply

STATE = "~/.local/state/dgxcluster"
PYZ = ship.home_path(STATE, "demo")


def test_held_while_inside_and_released_at_exit() -> None:
    conn = FakeConnection("head").on("clusterlock", Reply(stdout="LOCKED\n", until_eof=True))
    with ClusterLock(conn, STATE, "demo", "start"):
        (proc,) = conn.processes
        assert not proc.done  # the lock program is still waiting on its stdin
    assert proc.done and proc.result().exit_code == 0
    argv = conn.calls[0]
    assert argv[:4] == ["python3", PYZ, "clusterlock", "demo"]
    assert argv[4].startswith("dgxcluster start by ")
    assert conn.stdins == [b""]
    assert not conn.closed


def test_someone_else_holding_it_is_named() -> None:
    holder = ("dgxcluster stop by ana@ops pid 42 since 2026-12-01T10:00:00Z "
              "(ssh user ana on spark1)")
    conn = FakeConnection("head").on("clusterlock", Reply(stdout=f"HELD {holder}\n",
                                                          exit_code=HELD_EXIT))
    with pytest.raises(LockHeld) as info:
        ClusterLock(conn, STATE, "demo", "start").acquire()
    assert holder in str(info.value) and "the lock of cluster demo on head" in str(info.value)


def test_first_use_on_a_node_ships_the_program_then_takes_the_lock() -> None:
    missing = Reply(exit_code=2, stderr=f"python3: can't open file '/home/u/{PYZ}': "
                    "[Errno 2] No such file or directory\n")
    replies = iter([missing, Reply(stdout="LOCKED\n", until_eof=True)])
    conn = FakeConnection("head").on("clusterlock", lambda argv, stdin: next(replies))
    with ClusterLock(conn, STATE, "demo", "start"):
        assert conn.files[PYZ] == ship.bundle()
        assert len(conn.processes) == 2 and not conn.processes[1].done


def test_a_failing_lock_program_says_why() -> None:
    conn = FakeConnection("head").on("clusterlock", Reply(
        stderr="Traceback ...\nPermissionError: [Errno 1] Operation not permitted\n",
        exit_code=1))
    with pytest.raises(StepError, match="Operation not permitted"):
        ClusterLock(conn, STATE, "demo", "stop").acquire()


def test_no_answer_gives_up_and_ends_the_lock_program() -> None:
    conn = FakeConnection("head").on("clusterlock", Reply(until_eof=True))  # never answers
    with pytest.raises(StepError, match=r"no answer from head within 0\.1s"):
        ClusterLock(conn, STATE, "demo", "start", acquire_timeout=0.1).acquire()
    (proc,) = conn.processes
    assert proc.done and proc.result().exit_code in (0, KILLED)


def test_unreachable_head() -> None:
    conn = FakeConnection("head", unreachable="connection refused")
    with pytest.raises(ConnectError):
        ClusterLock(conn, STATE, "demo", "start").acquire()


# -- the node-side program, run here -------------------------------------------------------

def _holder(name: str, text: str) -> subprocess.Popen[bytes]:
    proc = spawn(nodeside.argv("clusterlock", name, text), stdin=subprocess.PIPE,
                 stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None
    assert proc.stdout.readline() == b"LOCKED\n"
    return proc


def test_one_holder_at_a_time_the_refused_one_told_who_and_freed_at_eof() -> None:
    name = f"t{uuid.uuid4().hex[:8]}"
    first = _holder(name, "dgxcluster start by ana@ops pid 1 since then")
    second = nodeside.run("clusterlock", name, "dgxcluster stop by bo@lap", "--wait", "0.2")
    assert second.returncode == HELD_EXIT
    assert second.stdout.decode().startswith("HELD dgxcluster start by ana@ops pid 1 since then "
                                             "(ssh user ")
    assert first.stdin is not None
    first.stdin.close()  # the operator's channel closed: released
    assert first.wait(10) == 0
    again = _holder(name, "dgxcluster stop by bo@lap")
    again.kill()
    again.wait(10)


def test_a_killed_holder_leaves_no_stale_lock() -> None:
    name = f"t{uuid.uuid4().hex[:8]}"
    first = _holder(name, "holder")
    os.kill(first.pid, signal.SIGKILL)
    first.wait(10)
    again = _holder(name, "next")  # at once: the kernel freed the address
    again.kill()
    again.wait(10)
