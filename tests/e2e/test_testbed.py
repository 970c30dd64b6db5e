"""The testbed itself, as a newcomer and the fault tests use it: `up --docker` leaves what
`dgxcluster build` needs, and a SIGKILLed dockerd comes back with `dockerd NODE start`."""

from __future__ import annotations

import os
import shutil
import signal
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, Testbed

pytestmark = [pytest.mark.e2e, pytest.mark.docker]

WHEELS = REPO / "images" / "testbed" / "wheels"
STATE = Path("/var/lib/dgxtb")


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
