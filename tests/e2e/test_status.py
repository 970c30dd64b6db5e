"""`dgxcluster status` and `smoke` against real sshd and dockerd on a 2-node testbed."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.conftest import Testbed
from tests.e2e.observe import remove_cluster_containers, start_labelled

pytestmark = [pytest.mark.e2e, pytest.mark.docker]


@pytest.fixture
def bare(testbed_docker: Testbed) -> Iterator[Testbed]:
    """The docker testbed with none of its cluster's containers."""
    remove_cluster_containers(testbed_docker, testbed_docker.name)
    yield testbed_docker
    remove_cluster_containers(testbed_docker, testbed_docker.name)


def status_json(tb: Testbed) -> tuple[int, dict[str, object]]:
    p = tb.dgx("status", "--json")
    assert p.stderr == "" or "Traceback" not in p.stderr, p.stderr
    return p.returncode, json.loads(p.stdout)


def test_before_start_everything_is_reported_as_not_running(bare: Testbed) -> None:
    code, doc = status_json(bare)
    assert code == 0
    nodes = doc["nodes"]
    assert isinstance(nodes, list)
    assert [(n["node"], n["role"], n["reachable"]) for n in nodes] == [
        ("node1", "head", True), ("node2", "worker", True)]
    for n in nodes:
        assert n["docker"] == {"running": True, "error": None}
        assert n["containers"] == []
        assert n["gpu"] is None and n["gpu_error"] == "no nvidia-smi on this node"
    assert doc["ray"] == {**doc["ray"], "state": "down"}  # type: ignore[dict-item]
    vllm = doc["vllm"]
    assert isinstance(vllm, dict) and vllm["state"] == "not serving"
    assert vllm["endpoint"].endswith(":8000/v1")
    image = doc["image"]
    assert isinstance(image, dict)
    assert image["expected_tag"].startswith("ctx-")  # from images/testbed, hashed locally

    images = [n["image"] for n in nodes]
    if any(i is None or i["id"] is None for i in images):  # build's tests may have run first
        assert not image["consistent"] and "no image built by dgxcluster" in image["detail"]
    human = bare.dgx("status")
    assert human.returncode == 0
    assert "no Ray dashboard on node1" in human.stdout and "not serving" in human.stdout


@pytest.fixture
def cli_on_node2(bare: Testbed) -> Iterator[Testbed]:
    """node2 with a docker context configured: status must ask the docker CLI there."""
    bare.node_exec("node2", "sh", "-c", "mkdir -p /root/.docker && "
                   "echo '{\"currentContext\": \"default\"}' > /root/.docker/config.json")
    yield bare
    bare.node_exec("node2", "rm", "-rf", "/root/.docker")


def test_labelled_containers_with_role_state_and_uptime(cli_on_node2: Testbed) -> None:
    bare = cli_on_node2
    cluster = bare.name
    start_labelled(bare, "node1", cluster, "head")
    start_labelled(bare, "node2", cluster, "worker")
    bare.node_exec("node2", "docker", "kill", f"dgxc-{cluster}-worker")
    code, doc = status_json(bare)
    assert code == 0
    nodes = doc["nodes"]
    assert isinstance(nodes, list)
    (head,) = nodes[0]["containers"]
    (worker,) = nodes[1]["containers"]
    assert (head["name"], head["role"], head["state"]) == (f"dgxc-{cluster}-head", "head", "running")
    assert isinstance(head["uptime_s"], int) and 0 <= head["uptime_s"] < 600
    assert (worker["role"], worker["state"], worker["exit_code"]) == ("worker", "exited", 137)
    # node1 answered through Docker's API, node2 through the docker CLI (its context)
    assert worker["uptime_s"] is None and isinstance(worker["since_s"], int)
    assert head["status_text"].startswith("Up ")
    human = bare.dgx("status")
    assert "head running" in human.stdout and "worker exited (exit 137)" in human.stdout


def test_unreachable_node_and_stopped_dockerd(bare: Testbed) -> None:
    bare.tb("dockerd", "node1", "stop")
    bare.tb("cut", "node2")
    try:
        code, doc = status_json(bare)
    finally:
        bare.tb("heal", "node2")
        bare.tb("dockerd", "node1", "start")
    assert code == 3
    nodes = doc["nodes"]
    assert isinstance(nodes, list)
    assert nodes[0]["reachable"] is True and nodes[0]["docker"]["running"] is False
    assert "docker daemon" in nodes[0]["docker"]["error"].lower()
    assert nodes[1]["reachable"] is False and nodes[1]["error"]


def test_smoke_without_a_server_fails_with_the_reason(bare: Testbed) -> None:
    p = bare.dgx("smoke")
    assert p.returncode == 1
    assert "error: smoke test failed: nothing is serving at http://" in p.stderr
    assert "is the cluster started?" in p.stderr
