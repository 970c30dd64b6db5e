"""`dgxcluster logs` against real sshd and dockerd on a 2-node testbed."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.children import spawn
from tests.conftest import REPO, Testbed
from tests.e2e.observe import (
    API_KEY,
    TOKEN,
    bundle_from,
    every_byte,
    manifest,
    plant_server_log,
    remove_cluster_containers,
    start_labelled,
    wait_set_up,
)

pytestmark = [pytest.mark.e2e, pytest.mark.docker]

#: Node-private folders (each node's own /root, /tmp, /run), where a temporary file would land.
PRIVATE_DIRS = ("/root", "/tmp", "/run")
#: dockerd's own runtime state (the testbed's --exec-root), left out of the snapshot on purpose:
#: dockerd changes it by itself, whoever else runs. Its libnetwork removes a removed container's
#: /run/docker/netns/<id> file up to 60 s later (osl's gpmCleanupPeriod garbage collector), so
#: the containers the previous test removed change /run/docker/netns during this one, and
#: containerd keeps its shims' state under /run/docker/containerd. `logs` never writes there
#: itself (it only talks to dockerd); what it does inside a container `docker diff` checks.
DOCKERD_RUNTIME_DIRS = ("/run/docker",)


@pytest.fixture
def planted(testbed_docker: Testbed) -> Iterator[Testbed]:
    """The head and worker containers of the testbed's cluster, started by hand with secrets."""
    tb = testbed_docker
    cluster = tb.name
    remove_cluster_containers(tb, cluster)
    start_labelled(tb, "node1", cluster, "head")
    start_labelled(tb, "node2", cluster, "worker")
    plant_server_log(tb, "node1", cluster)
    # node2 has no dgxcluster log folder (earlier tests' runs may have left one)
    tb.node_exec("node2", "rm", "-rf", f"/root/.local/state/dgxcluster/{cluster}/logs")
    yield tb
    remove_cluster_containers(tb, cluster)


def test_collects_every_node_and_never_lets_a_planted_secret_through(
        planted: Testbed, tmp_path: Path) -> None:
    tb, cluster = planted, planted.name
    p = tb.dgx("logs", "-o", str(tmp_path), env={"HF_TOKEN": ""})  # the operator knows no token
    assert p.returncode == 0, p.stderr
    folder, archive = bundle_from(p.stdout)
    assert folder.parent == tmp_path and re.fullmatch(rf"{cluster}-\d{{8}}T\d{{6}}Z", folder.name)
    assert archive == tmp_path / f"{folder.name}.tar.gz" and archive.stat().st_size > 0

    head = folder / "node1" / "containers" / f"dgxc-{cluster}-head"
    worker = folder / "node2" / "containers" / f"dgxc-{cluster}-worker"
    for c in (head, worker):
        assert "container up; token is" in (c / "docker.log").read_text()
        assert (c / "ray" / "raylet.out").read_text().startswith("raylet started")
        assert (c / "ray" / "gcs_server.out").read_text() == "gcs ok\n"
        env = json.loads((c / "inspect.json").read_text())[0]["Config"]["Env"]
        assert "HF_TOKEN=******" in env and "WANDB_API_KEY=******" in env
    server_log = (folder / "node1" / "dgxcluster" / "vllm-serve.log").read_text()
    assert "INFO Started server process" in server_log and "******" in server_log
    for node in ("node1", "node2"):
        assert (folder / node / "host" / "uname.txt").read_text().startswith(f"Linux {node} ")
        assert "enp1s0f1np1" in (folder / node / "host" / "ip-d-addr.txt").read_text()
        assert (folder / node / "host" / "df-h.txt").stat().st_size > 0

    doc = manifest(folder)
    nodes = doc["nodes"]
    assert isinstance(nodes, dict) and set(nodes) == {"node1", "node2"}
    for node, rep in nodes.items():
        assert rep["reachable"] and rep["complete"] and rep["error"] is None
        sizes = {f["path"]: f["size"] for f in rep["files"]}
        assert sizes[f"{node}/host/uname.txt"] == (folder / node / "host/uname.txt").stat().st_size
        assert all(i["duration_s"] is not None for i in rep["items"])
    errors = {e["item"]: e["error"] for e in nodes["node2"]["errors"]}
    # testbed nodes have no GPU tools, and node2 has no dgxcluster log folder: recorded
    assert errors["host/nvidia-smi-q.txt"].startswith("exit 127")
    assert "no directory" in errors["dgxcluster-logs.tar"]

    leaks = [where for where, data in every_byte(folder, archive)
             if TOKEN.encode() in data or API_KEY.encode() in data]
    assert leaks == []
    assert TOKEN not in p.stdout + p.stderr


def _snapshot(tb: Testbed, node: str) -> set[str]:
    # FIFOs are left out: a running container's stdout pipe changes as it prints
    prune = [a for d in DOCKERD_RUNTIME_DIRS for a in ("-path", d, "-prune", "-o")]
    listing = tb.node_exec(node, "find", *PRIVATE_DIRS, "-xdev", *prune, "!", "-type", "p",
                           "-printf", "%p %s %T@\n").stdout
    return set(listing.splitlines())


def _container_diff(tb: Testbed, node: str, name: str) -> set[str]:
    return set(tb.node_exec(node, "docker", "diff", name).stdout.splitlines())


def test_leaves_no_file_on_the_nodes(planted: Testbed, tmp_path: Path) -> None:
    tb, cluster = planted, planted.name
    containers = {"node1": f"dgxc-{cluster}-head", "node2": f"dgxc-{cluster}-worker"}
    for n, c in containers.items():
        wait_set_up(tb, n, c)  # its setup files are written before the snapshot
    before = {n: _snapshot(tb, n) for n in tb.nodes}
    inside = {n: _container_diff(tb, n, c) for n, c in containers.items()}
    p = tb.dgx("logs", "-o", str(tmp_path))
    assert p.returncode == 0, p.stderr
    for n in tb.nodes:
        assert _snapshot(tb, n) - before[n] == set(), f"{n}: files appeared or changed"
        assert _container_diff(tb, n, containers[n]) == inside[n]


def test_one_node_unreachable_is_recorded_and_the_other_collected(
        planted: Testbed, tmp_path: Path) -> None:
    tb = planted
    tb.tb("cut", "node2")
    try:
        p = tb.dgx("logs", "-o", str(tmp_path))
    finally:
        tb.tb("heal", "node2")
    assert p.returncode == 3, p.stderr
    folder, archive = bundle_from(p.stdout)
    nodes = manifest(folder)["nodes"]
    assert isinstance(nodes, dict)
    assert nodes["node1"]["complete"] and nodes["node1"]["files"]
    assert nodes["node2"]["reachable"] is False and nodes["node2"]["files"] == []
    assert "timed out" in nodes["node2"]["error"] or "unreachable" in nodes["node2"]["error"]
    assert (folder / "node1" / "containers" / f"dgxc-{tb.name}-head" / "docker.log").exists()
    assert "unreachable" in p.stdout and archive.exists()


def test_nothing_started_still_gives_host_facts(testbed_docker: Testbed, tmp_path: Path) -> None:
    tb = testbed_docker
    remove_cluster_containers(tb, tb.name)
    p = tb.dgx("logs", "--node", "node2", "--since", "10m", "-o", str(tmp_path))
    assert p.returncode == 0, p.stderr
    folder, _ = bundle_from(p.stdout)
    assert sorted(x.name for x in folder.iterdir()) == ["manifest.json", "node2"]
    assert not (folder / "node2" / "containers").exists()
    assert (folder / "node2" / "host" / "free-m.txt").read_text().startswith(" ")
    assert manifest(folder)["since_s"] == 600


def _followers(tb: Testbed, node: str) -> list[str]:
    out = tb.tb("ps", node).stdout
    return [ln for ln in out.splitlines() if re.match(r"^\d+ docker logs -f", ln)]


def test_follow_interleaves_nodes_and_stops_the_remote_followers(planted: Testbed) -> None:
    tb = planted
    env = {k: v for k, v in os.environ.items() if not k.startswith("DGXCLUSTER_")}
    proc = spawn(
        [sys.executable, "-m", "dgxcluster", "-i", str(tb.inventory), "logs", "--follow"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO, env=env)
    seen: dict[str, list[str]] = {"node1": [], "node2": []}
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not all(
                any("tick" in ln for ln in lines) for lines in seen.values()):
            line = proc.stdout.readline()
            if not line:
                break
            node = line.split("[", 1)[0]
            seen.setdefault(node, []).append(line.rstrip("\n"))
        assert all(_followers(tb, n) for n in tb.nodes)
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert any(re.fullmatch(r"node1\[head\]: tick \d+", ln) for ln in seen["node1"]), seen
    assert any(re.fullmatch(r"node2\[worker\]: tick \d+", ln) for ln in seen["node2"]), seen
    assert TOKEN not in "".join(seen["node1"] + seen["node2"]) + out
    assert "following 2 container log(s)" in err
    for n in tb.nodes:
        assert _followers(tb, n) == [], f"{n}: docker logs -f still running after Ctrl-C"
