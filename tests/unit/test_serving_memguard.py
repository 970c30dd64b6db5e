"""`start --drop-caches` (root, sudo, neither) and the page cache in /proc/meminfo."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from dgxcluster.core.steps import Status
from dgxcluster.errors import StepError
from dgxcluster.facts import meminfo
from dgxcluster.serving import dropcaches
from tests.fakes import FakeConnection, Reply

BEFORE = "MemTotal:       24683584 kB\nMemAvailable:   20123456 kB\nCached:          4194304 kB\n"
AFTER = "MemTotal:       24683584 kB\nMemAvailable:   20200000 kB\nCached:           524288 kB\n"
M = dropcaches.MARK


def test_meminfo_reads_the_page_cache() -> None:
    m = meminfo.parse(BEFORE)
    assert m.cached_bytes == 4 * 1024**3 and m.available_bytes == 20123456 * 1024
    assert meminfo.parse("MemTotal: 1 kB\n").cached_bytes is None


def test_dropped_as_root_says_what_it_freed() -> None:
    out = f"{BEFORE}{M}\nas root\n{M}\n{AFTER}"
    assert dropcaches.judge("n1", 0, out, "") == (
        Status.CHANGED, "dropped the page cache (as root): cached 4.0 GiB -> 512.0 MiB")
    via_sudo = dropcaches.judge("n1", 0, f"{BEFORE}{M}\nthrough sudo\n{M}\n{AFTER}", "")
    assert via_sudo[1].startswith("dropped the page cache (through sudo)")


def test_without_root_or_sudo_the_node_is_named_with_the_fix() -> None:
    with pytest.raises(StepError) as err:
        dropcaches.judge("n2", 0, f"{BEFORE}{M}\nno root\n{M}\n{AFTER}", "")
    assert err.value.node == "n2" and err.value.step == "drop-caches"
    assert "needs root or passwordless sudo" in str(err.value) and "sudo" in dropcaches.FIX
    with pytest.raises(StepError) as err:  # root, but /proc/sys read-only (a container)
        dropcaches.judge("n2", 1, f"{BEFORE}{M}\n", "sh: 1: cannot create "
                         "/proc/sys/vm/drop_caches: Read-only file system\n")
    assert "Read-only file system" in str(err.value)


def test_the_script_as_a_user_without_sudo_says_no_root(tmp_path: Path) -> None:
    """The node-side script itself, run here as a user it takes for non-root with no sudo:
    `id` and `sudo` shadowed on PATH, nothing written to /proc."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "id").write_text("#!/bin/sh\necho 1000\n")
    (bin_dir / "sudo").write_text("#!/bin/sh\nexit 1\n")
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    res = subprocess.run(dropcaches.argv(), capture_output=True, text=True, env=env, check=False)
    with pytest.raises(StepError, match="needs root or passwordless sudo"):
        dropcaches.judge("here", res.returncode, res.stdout, res.stderr)
    assert res.stdout.count(M) == 2 and "MemTotal:" in res.stdout


def test_drop_runs_one_command_on_the_node() -> None:
    conn = FakeConnection("n1").on("drop_caches", Reply(stdout=f"{BEFORE}{M}\nas root\n{M}\n{AFTER}"))
    status, text = dropcaches.drop(conn)
    assert status == Status.CHANGED and "4.0 GiB -> 512.0 MiB" in text
    assert len(conn.calls) == 1
