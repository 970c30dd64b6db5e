"""Shared fixtures: inventories in temp dirs, and the emulated cluster (testbed) for e2e tests.

End-to-end tests bring up testbeds with `scripts/testbed` (real sshd, real dockerd per node).
Testbed names start with $DGXTB_TEST_PREFIX (default 't') so parallel runs do not collide.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests import children

REPO = Path(__file__).resolve().parents[1]
TESTBED = REPO / "scripts" / "testbed"
#: The build args a testbed inventory's `build` passes (ray.version as RAY_VERSION): content
#: tags computed by tests must include them to match what build made.
BUILD_ARGS = {"RAY_VERSION": next(
    ln.split("=", 1)[1] for ln in (REPO / "images" / "testbed" / "Dockerfile").read_text().splitlines()
    if ln.startswith("ARG RAY_VERSION="))}
FIXTURES = REPO / "tests" / "fixtures"
PREFIX = os.environ.get("DGXTB_TEST_PREFIX", "t")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason="end-to-end tests need root (they create a testbed)")
    for item in items:
        if "e2e" in item.keywords:
            item.add_marker(skip)


@dataclass
class Testbed:
    """A running emulated cluster and the fault switches tests flip on it."""

    __test__ = False

    name: str
    n: int
    docker: bool
    inventory: Path
    known_hosts: Path

    @property
    def nodes(self) -> list[str]:
        return [f"node{i}" for i in range(1, self.n + 1)]

    def tb(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(TESTBED), "--name", self.name, *args], capture_output=True,
                              text=True, check=check, timeout=900)

    def repair(self) -> None:
        """Undo every fault: links up, sshd answering, dockerd running, known_hosts fresh."""
        args = ["up", str(self.n)] + (["--docker"] if self.docker else [])
        self.tb(*args)

    def node_exec(self, node: str, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run a command inside a node's namespaces, bypassing SSH (for setup and inspection)."""
        return self.tb("exec", node, "--", *argv, check=check)

    def portable_doc(self) -> dict[str, Any]:
        """The testbed's inventory as data whose paths (known_hosts, image.context) are
        absolute: a copy written anywhere (a test's tmp_path) describes the same cluster,
        since relative paths in an inventory are read from the file's own folder."""
        doc: dict[str, Any] = yaml.safe_load(self.inventory.read_text())
        doc["ssh"]["known_hosts"] = str(self.known_hosts)
        doc["image"]["context"] = str(self.inventory.parent / doc["image"]["context"])
        return doc

    def status(self) -> dict[str, object]:
        return json.loads(self.tb("status", "--json").stdout)

    def ensure_image(self) -> None:
        """The inventory's image on every node, made by the real `dgxcluster build`
        (a no-op of about a second when every node already holds the content tag)."""
        fetch = REPO / "images" / "testbed" / "fetch-wheels"
        subprocess.run([str(fetch)], check=True, capture_output=True, timeout=900)
        p = self.dgx("build", "--all-nodes", timeout=1800)
        if p.returncode != 0:
            pytest.fail(f"dgxcluster build failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")

    def ensure_model(self, repo: str = "Qwen/Qwen3-0.6B") -> None:
        """The model `start` serves, complete on every node: a synthetic one (the testbed has
        no internet) made on node1, then copied by the real `dgxcluster model sync`."""
        if self.node_exec("node1", "test", "-d", "/root/.cache/huggingface/hub/models--"
                          + repo.replace("/", "--"), check=False).returncode != 0:
            self.tb("seed-model", "node1", repo)
        p = self.dgx("model", "sync", repo, "--from", "node1", timeout=600)
        if p.returncode != 0:
            pytest.fail(f"dgxcluster model sync failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")

    def dgx(self, *args: str, env: dict[str, str] | None = None, timeout: float = 900,
            input: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run the real CLI against this testbed."""
        return run_cli("-i", str(self.inventory), *args, env=env, timeout=timeout, input=input)


def flat(text: str) -> str:
    """The CLI's rich tables wrap cells: compare words, not lines."""
    return " ".join(re.sub(r"[│┃┏┓┗┛┡┩└┘━─╇╈┳┻]", " ", text).split())


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 900,
            input: str | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("DGXCLUSTER_")}
    full_env["DGXCLUSTER_WARM_SOCKET"] = ""  # cold, unless a test asks for its warm server
    full_env.update(env or {})
    return children.run([sys.executable, "-m", "dgxcluster", *args], env=full_env,
                        timeout=timeout, input=input, cwd=str(cwd or REPO))


def _up(name: str, n: int, docker: bool) -> Testbed:
    args = [str(TESTBED), "--name", name, "up", str(n)] + (["--docker"] if docker else [])
    proc = subprocess.run(args, capture_output=True, text=True, timeout=1800, check=False)
    if proc.returncode != 0:
        pytest.fail(f"testbed up failed: {proc.stderr}\n{proc.stdout}")
    stem = "testbed" if name == "tb" else f"testbed-{name}"
    return Testbed(name, n, docker, REPO / "inventory" / f"{stem}.yaml",
                   REPO / "inventory" / f"{stem}.known_hosts")


def _down(name: str) -> None:
    if os.environ.get("DGXTB_KEEP"):
        return
    subprocess.run([str(TESTBED), "--name", name, "down"], capture_output=True, timeout=900,
                   check=False)


@pytest.fixture(autouse=True)
def _no_child_left(request: pytest.FixtureRequest) -> Iterator[None]:
    """Before an end-to-end test: no dgxcluster process of this run still holds a cluster lock
    (one left by an earlier test is named, ended, and reported as a warning, so that its
    failure does not become every later test's "the lock is held"). After any test: every
    child it started (tests/children.py) is killed with its process group, pass or fail."""
    if request.node.get_closest_marker("e2e") is not None:
        for holder in children.lock_holders():
            ended = children.end_holder(holder)
            message = (f"before {request.node.nodeid}: {holder.text} still held the cluster "
                       f"lock {holder.lock}" + (" (ended it)" if ended else ""))
            if not ended:
                pytest.fail(message + "; it would not end", pytrace=False)
            warnings.warn(message, pytest.PytestWarning, stacklevel=1)
    since = children.mark()
    yield
    children.reap(since)


@pytest.fixture(scope="session")
def testbed3() -> Iterator[Testbed]:
    """Three SSH-only nodes (no Docker)."""
    tb = _up(f"{PREFIX}s3", 3, docker=False)
    yield tb
    _down(tb.name)


@pytest.fixture(scope="session")
def testbed_docker() -> Iterator[Testbed]:
    """Two nodes, each with its own dockerd and the locally made base image."""
    tb = _up(f"{PREFIX}d2", 2, docker=True)
    yield tb
    _down(tb.name)


@pytest.fixture
def healthy3(testbed3: Testbed) -> Iterator[Testbed]:
    """testbed3, repaired before and after the test (for tests that inject faults)."""
    testbed3.repair()
    yield testbed3
    testbed3.repair()
