"""The cluster lock over a held-open remote process (fake connection; the real flock and
its release on a dropped channel are proven in tests/e2e/test_start_stop.py)."""

from __future__ import annotations

import pytest

from dgxcluster.errors import ConnectError, LockHeld, StepError
from dgxcluster.remote.process import KILLED
from dgxcluster.serving.lock import HELD_EXIT, ClusterLock, lock_path
from tests.fakes import FakeConnection, Reply

PATH = lock_path("~/.local/state/dgxcluster", "demo")


def test_held_while_inside_and_released_at_exit() -> None:
    conn = FakeConnection("head").on("flock", Reply(stdout="LOCKED\n", until_eof=True))
    with ClusterLock(conn, PATH, "start"):
        (proc,) = conn.processes
        assert not proc.done  # the lock shell is still waiting on its stdin
    assert proc.done and proc.result().exit_code == 0
    argv = conn.calls[0]
    assert argv[4] == PATH and argv[5].startswith("dgxcluster start by ")
    assert conn.stdins == [b""]
    assert not conn.closed


def test_someone_else_holding_it_is_named() -> None:
    holder = "dgxcluster stop by ana@ops pid 42 since 2026-12-01T10:00:00Z"
    conn = FakeConnection("head").on("flock", Reply(stdout=f"HELD {holder}\n",
                                                    exit_code=HELD_EXIT))
    with pytest.raises(LockHeld) as info:
        ClusterLock(conn, PATH, "start").acquire()
    assert holder in str(info.value) and "head" in str(info.value)
    assert "~/.local/state/dgxcluster/demo/lock" in str(info.value)


def test_a_failing_lock_script_says_why() -> None:
    conn = FakeConnection("head").on("flock", Reply(stderr="mkdir: Permission denied\n",
                                                    exit_code=70))
    with pytest.raises(StepError, match="Permission denied"):
        ClusterLock(conn, PATH, "stop").acquire()


def test_no_answer_gives_up_and_ends_the_lock_shell() -> None:
    conn = FakeConnection("head").on("flock", Reply(until_eof=True))  # never says LOCKED
    with pytest.raises(StepError, match=r"no answer from head within 0\.1s"):
        ClusterLock(conn, PATH, "start", acquire_timeout=0.1).acquire()
    (proc,) = conn.processes
    assert proc.done and proc.result().exit_code in (0, KILLED)


def test_unreachable_head_and_own_connection_closed() -> None:
    conn = FakeConnection("head", unreachable="connection refused")
    with pytest.raises(ConnectError):
        ClusterLock(conn, PATH, "start", own_connection=True).acquire()
    assert conn.closed
