"""tests/children.py, the one place tests start children: SIGINT at its default whatever the
runner inherited, the whole process group killed at the test's end, lock holders found."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import children

PRINT_SIGINT = ("import signal, time; h = signal.getsignal(signal.SIGINT); "
                "print('ignored' if h == signal.SIG_IGN else h.__name__, flush=True); "
                "time.sleep(60)")


@pytest.fixture
def sigint_ignored() -> Iterator[None]:
    """This process as a detached runner has it (`nohup ... &`, a CI runner)."""
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    yield
    signal.signal(signal.SIGINT, old)


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_a_child_gets_sigint_at_its_default_when_the_runner_ignores_it(sigint_ignored: None) -> None:
    plain = subprocess.run([sys.executable, "-c", PRINT_SIGINT.replace("time.sleep(60)", "")],
                           capture_output=True, text=True, timeout=60)
    assert plain.stdout.strip() == "ignored"  # what the issue was about
    mark = children.mark()
    proc = children.spawn([sys.executable, "-c", PRINT_SIGINT], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "default_int_handler\n"
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=60)
        assert "KeyboardInterrupt" in err
    finally:
        children.reap(mark)


def test_reap_kills_what_a_child_started_too() -> None:
    mark = children.mark()
    proc = children.spawn(["sh", "-c", "sleep 300 & echo $!; wait"], stdout=subprocess.PIPE,
                          text=True)
    assert proc.stdout is not None
    grandchild = int(proc.stdout.readline())
    assert os.getpgid(grandchild) == proc.pid  # the child leads its own group
    left = children.reap(mark)
    assert len(left) == 1 and "sleep 300" in left[0]
    assert proc.poll() is not None
    deadline = time.monotonic() + 10  # the signal is sent; its delivery is the kernel's
    while alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(grandchild)
    assert children.reap(mark) == []  # each child is reaped once


def test_a_lock_holder_of_this_run_is_found_named_and_ended(tmp_path: Path) -> None:
    """A stand-in for dgxcluster's lock shell (serving/lock.py's script: flock -w 2 9, the
    holder text as its last argument) held for a child of this process."""
    mark = children.mark()
    try:
        holder = children.spawn(["sleep", "300"])
        text = f"dgxcluster start by tester@here pid {holder.pid} since 2026-12-02T00:00:00Z"
        lock = str(tmp_path / "lock")
        shell = children.spawn(["sh", "-c", 'exec 9>>"$1"; flock -w 2 9 && echo LOCKED; sleep 300',
                                "sh", lock, text], stdout=subprocess.PIPE, text=True)
        assert shell.stdout is not None and shell.stdout.readline() == "LOCKED\n"
        found = [h for h in children.lock_holders() if h.pid == holder.pid]
        assert found == [children.Holder(holder.pid, text, lock)]
        assert children.end_holder(found[0])
        assert holder.wait(10) == -signal.SIGTERM
        assert all(h.pid != holder.pid for h in children.lock_holders())
    finally:
        children.reap(mark)


def test_a_holder_of_the_shipped_clusterlock_program_is_found_too() -> None:
    """The lock as a node-side program (`python3 PYZ clusterlock CLUSTER HOLDER`)."""
    mark = children.mark()
    try:
        holder = children.spawn(["sleep", "300"])
        text = f"dgxcluster stop by tester@here pid {holder.pid} since 2026-12-02T00:00:00Z"
        lock = children.spawn([sys.executable, "-c", "print('LOCKED', flush=True); "
                               "import time; time.sleep(300)", "clusterlock", "c1", text],
                              stdout=subprocess.PIPE, text=True)
        assert lock.stdout is not None and lock.stdout.readline() == "LOCKED\n"
        found = [h for h in children.lock_holders() if h.pid == holder.pid]
        assert found == [children.Holder(holder.pid, text, "c1")]
    finally:
        children.reap(mark)
