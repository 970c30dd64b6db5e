"""Operators as they really are (issue 12): two people with different SSH users on one
cluster, one connection per node per invocation (`scripts/testbed logins` counts them).

On the 2-node docker testbed with a second, non-root SSH user `ana` in group docker
(`scripts/testbed up --user ana`); the vLLM stand-in is the only double.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.children import spawn
from tests.conftest import REPO, Testbed, flat, run_cli
from tests.e2e.test_start_stop import HOLD
from tests.leaks import lock_held

pytestmark = [pytest.mark.e2e, pytest.mark.docker]

ENV = {"HF_TOKEN": "hf_e2eoperators0123456789abcdef"}
USER = "ana"


@pytest.fixture(scope="module")
def tb(testbed_docker: Testbed) -> Iterator[Testbed]:
    testbed_docker.tb("up", str(testbed_docker.n), "--docker", "--user", USER)
    testbed_docker.ensure_image()
    testbed_docker.ensure_model()
    testbed_docker.dgx("stop", env=ENV)
    yield testbed_docker
    testbed_docker.dgx("stop", env=ENV)


def logins(tb: Testbed, node: str) -> int:
    return len(tb.tb("logins", node).stdout.splitlines())


def as_user(tb: Testbed, tmp_path: Path, user: str = USER) -> Path:
    """The testbed's inventory as the second operator has it: their SSH user and key."""
    inv = yaml.safe_load(tb.inventory.read_text())
    inv["ssh"]["user"] = user
    inv["ssh"]["identity_file"] = str(Path(inv["ssh"]["identity_file"]).parent / f"id_{user}")
    inv["ssh"]["known_hosts"] = str(tb.known_hosts)
    inv["image"]["context"] = str(tb.inventory.parent / inv["image"]["context"])
    path = tmp_path / f"inventory-{user}.yaml"
    path.write_text(yaml.safe_dump(inv))
    return path


def test_one_lock_for_every_ssh_user_naming_the_holder(tb: Testbed, tmp_path: Path) -> None:
    """ana (a non-root SSH user in group docker) holds the cluster lock; root (another SSH
    user) is refused for start and stop, told who holds it; ana's holder is SIGKILLed (no
    cleanup code runs) and the lock is free for root at once: nothing stale."""
    ana = as_user(tb, tmp_path)
    holder = spawn([sys.executable, "-c", HOLD, str(ana)], stdout=subprocess.PIPE,
                   text=True, cwd=str(REPO))
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "LOCKED"
        assert lock_held(tb, "node1")
        for cmd in ("start", "stop"):
            r = tb.dgx(cmd, env=ENV)
            text = flat(r.stderr)
            assert r.returncode == 1, r.stderr
            assert re.search(rf"the lock of cluster {tb.name} on node1 is held by dgxcluster "
                             rf"test-holder by \S+@\S+ pid {holder.pid} since \S+Z \(ssh user "
                             rf"{USER} on node1\)", text), text
    finally:
        holder.kill()  # SIGKILL
        holder.wait()
    deadline = time.monotonic() + 10  # sshd closes the channel once it sees the TCP close
    while lock_held(tb, "node1") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not lock_held(tb, "node1")
    r = tb.dgx("stop", env=ENV)
    assert r.returncode == 0, r.stderr


def test_one_connection_per_node_per_invocation(tb: Testbed) -> None:
    """An idle `stop` (lock, discover) logs in once on each node; so do `start` (lock,
    preflight, Ray, vLLM, the readiness wait) and `status`."""
    for argv in (["stop"], ["start"], ["status"], ["stop"]):
        before = {n: logins(tb, n) for n in tb.nodes}
        r = tb.dgx(*argv, env=ENV)
        assert r.returncode == 0, r.stderr
        assert {n: logins(tb, n) - before[n] for n in tb.nodes} == {"node1": 1, "node2": 1}, argv


def test_an_alias_host_this_machine_cannot_resolve_is_probed_at_its_hostname(
        tb: Testbed, tmp_path: Path) -> None:
    """Issue 12: with `host: node1`, an ~/.ssh/config alias (`scripts/testbed ssh-config`),
    the endpoint was `http://node1:8000`, which this machine cannot resolve: a healthy start
    was rolled back as not ready. Now start, status and the printed endpoint use the alias's
    HostName."""
    home = tmp_path / "home"
    tb.tb("ssh-config", str(home))
    inv = home / "inventory.yaml"
    assert "host: node1\n" in inv.read_text()
    ip = yaml.safe_load(tb.inventory.read_text())["nodes"][0]["host"]
    env = {**ENV, "HOME": str(home)}
    try:
        r = run_cli("-i", str(inv), "start", env=env, timeout=900)
        assert r.returncode == 0, r.stderr
        assert f"http://{ip}:8000/v1" in flat(r.stdout), r.stdout
        s = run_cli("-i", str(inv), "status", env=env, timeout=300)
        assert s.returncode == 0, s.stdout + s.stderr
        assert f"http://{ip}:8000" in flat(s.stdout) and "ready" in s.stdout, s.stdout
    finally:
        assert run_cli("-i", str(inv), "stop", env=env, timeout=300).returncode == 0
