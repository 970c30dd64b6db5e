"""The testbed itself, as a newcomer and the fault tests use it: `up --docker` leaves what
`dgxcluster build` needs, and a SIGKILLed dockerd comes back with `dockerd NODE start`."""

from __future__ import annotations

import os
import shutil
import signal
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, Testbed, run_cli

pytestmark = pytest.mark.e2e

WHEELS = REPO / "images" / "testbed" / "wheels"
STATE = Path("/var/lib/dgxtb")


@pytest.mark.docker
def test_up_docker_prepares_what_the_testbed_image_needs(testbed_docker: Testbed,
                                                         tmp_path: Path) -> None:
    """A fresh checkout has no images/testbed/wheels (gitignored); the Dockerfile bind-mounts
    it, and BuildKit said `"/wheels" not found`. `up --docker` fetches them (cached)."""
    aside = tmp_path / "wheels"
    if WHEELS.exists():
        shutil.move(str(WHEELS), aside)
    try:
        testbed_docker.repair()
        names = sorted(p.name for p in WHEELS.glob("*.whl"))
        dockerfile = (REPO / "images" / "testbed" / "Dockerfile").read_text()
        ray = dockerfile.split("ARG RAY_VERSION=", 1)[1].split()[0]
        hub = dockerfile.split("ARG HF_HUB_VERSION=", 1)[1].split()[0]
        assert any(n.startswith(f"ray-{ray}-") for n in names), names
        assert any(n.startswith(f"huggingface_hub-{hub}-") for n in names), names
        assert "source=wheels" in dockerfile  # what the build reads
    finally:
        if not WHEELS.exists() and aside.exists():
            shutil.move(str(aside), WHEELS)


@pytest.mark.docker
def test_dockerd_start_after_sigkill_waits_for_it(testbed_docker: Testbed) -> None:
    """With a container running, a SIGKILLed dockerd's successor accepts on its socket but
    answers only after cleaning up (10 s or more): `dockerd NODE start` waits, no
    TimeoutExpired traceback."""
    tb = testbed_docker
    tb.node_exec("node2", "docker", "rm", "-f", "dgxtb-sigkill", check=False)
    tb.node_exec("node2", "docker", "run", "-d", "--name", "dgxtb-sigkill",
                 "dgxcluster/testbed-base:bookworm", "sleep", "600")
    try:
        pid = int((STATE / tb.name / "node2" / "run" / "docker.pid").read_text())
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while Path(f"/proc/{pid}/exe").exists() and time.monotonic() < deadline:
            time.sleep(0.05)  # gone (a zombie has no exe)
        p = tb.tb("dockerd", "node2", "start", check=False)
        assert p.returncode == 0, p.stderr
        assert "Traceback" not in p.stderr and p.stdout.strip() == "node2: dockerd started"
        assert tb.node_exec("node2", "docker", "version", "--format",
                            "{{.Server.Version}}").returncode == 0
    finally:
        tb.node_exec("node2", "docker", "rm", "-f", "dgxtb-sigkill", check=False)


# -- support for the phase-2 fault tests: a second operator, ~/.ssh/config aliases, a full disk

@pytest.mark.docker
def test_a_second_ssh_user_who_can_run_docker(testbed_docker: Testbed, tmp_path: Path) -> None:
    tb = testbed_docker
    up = tb.tb("up", "2", "--docker", "--user", "alice")
    assert f"user alice:   ssh key {STATE / tb.name / 'id_alice'}" in up.stdout
    tb.tb("ssh-config", str(tmp_path), "--user", "alice")
    p = run_cli("-i", str(tmp_path / "inventory.yaml"), "exec", "--", "sh", "-c",
                'echo "$(id -un) $HOME $(docker info --format "{{.Name}}")"',
                env={"HOME": str(tmp_path)})
    assert p.returncode == 0, p.stderr
    assert sorted(p.stdout.splitlines()) == ["node1: alice /home/alice node1",
                                             "node2: alice /home/alice node2"]
    assert "alice" not in Path("/etc/passwd").read_text()  # the host is left alone


def test_ssh_config_aliases_this_machine_cannot_resolve(testbed3: Testbed, tmp_path: Path) -> None:
    testbed3.tb("ssh-config", str(tmp_path), "--jump", "node3=node1,node2")
    inv = tmp_path / "inventory.yaml"
    assert "    host: node1\n" in inv.read_text()
    assert socket_resolves("node1") is False  # only ssh knows where node1 is
    p = run_cli("-i", str(inv), "exec", "--", "hostname", env={"HOME": str(tmp_path)})
    assert p.returncode == 0, p.stderr
    assert sorted(p.stdout.splitlines()) == ["node1: node1", "node2: node2", "node3: node3"]


def test_a_small_disk_fills_up_and_up_removes_it(testbed3: Testbed) -> None:
    cache = "/root/.cache/huggingface"
    testbed3.tb("tmpfs", "node2", cache, "1m")
    try:
        full = testbed3.node_exec("node2", "dd", "if=/dev/zero", f"of={cache}/big", "bs=64k",
                                  "count=64", check=False)
        assert full.returncode != 0 and "No space left on device" in full.stderr
    finally:
        testbed3.repair()
    assert testbed3.node_exec("node2", "test", "-e", f"{cache}/big", check=False).returncode != 0


def socket_resolves(name: str) -> bool:
    import socket

    try:
        socket.getaddrinfo(name, 22)
    except socket.gaierror:
        return False
    return True
