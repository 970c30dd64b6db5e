"""The one place tests start child processes: `spawn`, and what ends them.

- SIGINT at its default in the child, whatever the test runner inherited. A non-interactive
  shell starts background jobs with SIGINT ignored (so do `nohup ... &`, CI runners and
  `scripts/test --detached`), a Python program that inherits an ignored SIGINT never raises
  KeyboardInterrupt, and a test that sends SIGINT (as Ctrl-C does) would wait for nothing.
  `env --default-signal=INT` (GNU coreutils) resets it and execs the program: same pid.
- Each child leads a process group of its own, so that what it started goes with it.
- Every child started while a test runs is killed, its whole process group, when that test
  ends, pass or fail (`reap`, from the autouse fixture in tests/conftest.py), so a `start`
  left running cannot hold the cluster lock into the next test.
- `lock_holders`: the dgxcluster processes of this test run that hold a cluster lock, found
  from the lock processes on the nodes (the testbed's nodes share this host's PID namespace).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: Resets SIGINT to its default, then execs the program (same pid).
DEFAULT_SIGINT = ["env", "--default-signal=INT"]
#: How long a child gets to end on SIGTERM (dgxcluster rolls back) before SIGKILL.
TERM_GRACE_S = 20.0

_started: list[subprocess.Popen[Any]] = []


def spawn(argv: Sequence[str], **popen: Any) -> subprocess.Popen[Any]:
    """`subprocess.Popen(argv, **popen)` with SIGINT at its default, in its own process group,
    remembered so that the test's end kills it."""
    if not popen.get("start_new_session"):  # a new session is a new process group already
        popen["process_group"] = 0
    proc: subprocess.Popen[Any] = subprocess.Popen([*DEFAULT_SIGINT, *argv], **popen)
    _started.append(proc)
    return proc


def run(argv: Sequence[str], *, timeout: float, input: str | None = None,
        **popen: Any) -> subprocess.CompletedProcess[str]:
    """`subprocess.run` through `spawn`: on a timeout (or the test interrupted) the child's
    whole process group is killed, not the child alone."""
    stdin = subprocess.PIPE if input is not None else popen.pop("stdin", None)
    proc = spawn(argv, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                 **popen)
    try:
        out, err = proc.communicate(input, timeout=timeout)
    except BaseException:
        kill_group(proc, grace_s=0)
        raise
    return subprocess.CompletedProcess(list(argv), proc.returncode, out, err)


def mark() -> int:
    """Where the list of started children stands (`reap` ends those started after it)."""
    return len(_started)


def reap(since: int) -> list[str]:
    """Kills every child started after `since` that is still running, with its process group
    (SIGTERM, then SIGKILL after TERM_GRACE_S); returns their command lines."""
    left = [p for p in _started[since:] if p.poll() is None]
    del _started[since:]
    for proc in left:
        kill_group(proc)
    return [" ".join(map(str, proc.args))[:200] for proc in left]


def kill_group(proc: subprocess.Popen[Any], grace_s: float = TERM_GRACE_S) -> None:
    """SIGTERM to the child's process group, SIGKILL to it after `grace_s`."""
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 10.0)):
        if sig is signal.SIGTERM and grace_s <= 0:
            continue
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(wait_s)
            break
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # what the child started and left behind


# -- who holds a cluster lock ----------------------------------------------------------------

#: How a lock holder's node-side process shows in its argv: the flock(1) shell script of
#: serving/lock.py, or (since issue 12 phase 2) the shipped `clusterlock` program, each given
#: the lock (path, or cluster name) then the holder text.
_FLOCK_SCRIPT, _LOCK_PROGRAM = "flock -w 2 9", "clusterlock"
_HOLDER = re.compile(r"^dgxcluster (\S+) by (\S+) pid (\d+) since (\S+)$")


@dataclass(frozen=True)
class Holder:
    pid: int  # the dgxcluster process
    text: str  # "dgxcluster start by root@host pid 123 since ..."
    lock: str  # the lock, as its node-side process was given it (file or cluster name)


def lock_holders() -> list[Holder]:
    """The cluster locks held by a dgxcluster process that descends from this one."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if not any(a == _LOCK_PROGRAM or _FLOCK_SCRIPT in a for a in argv):
            continue
        for i, arg in enumerate(argv[1:], 1):
            holder = _HOLDER.match(arg)
            if holder and _descends_from_us(int(holder[3])):
                found.append(Holder(int(holder[3]), arg, argv[i - 1]))
    # once: the lock shell's child between its fork and exec has the shell's command line
    return list(dict.fromkeys(found))


def _descends_from_us(pid: int) -> bool:
    """Whether `pid` is alive (a zombie holds no lock: its SSH channel is closed) and a
    descendant of this process."""
    me, first = os.getpid(), True
    while pid > 1:
        if pid == me:
            return True
        try:
            state, ppid = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[:2]
        except OSError:
            return False
        if first and state == "Z":
            return False
        pid, first = int(ppid), False
    return False


def end_holder(holder: Holder, wait_s: float = TERM_GRACE_S + 10) -> bool:
    """SIGTERM (then SIGKILL) to a lock holder left by an earlier test, and its group when it
    leads one; True once its lock shell is gone."""
    try:
        group = holder.pid if os.getpgid(holder.pid) == holder.pid else None
    except ProcessLookupError:
        group = None
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, sig) if group is not None else os.kill(holder.pid, sig)
        deadline = time.monotonic() + wait_s / 2
        while time.monotonic() < deadline:
            if all(h.pid != holder.pid for h in lock_holders()):
                return True
            time.sleep(0.2)
    return False
