"""`status`, `smoke` and `logs` against a cluster made by the real `build` and `start` on the
2-node docker testbed: real sshd, dockerd and Ray; vLLM is the testbed's stand-in.
Each test leaves nothing of the cluster running.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.children import spawn
from tests.conftest import REPO, Testbed, flat
from tests.e2e.observe import bundle_from, every_byte, manifest, remove_cluster_containers

pytestmark = [pytest.mark.e2e, pytest.mark.docker]

TOKEN = "hf_" + "ObserveE2e" * 3
ENV = {"HF_TOKEN": TOKEN}


def status(tb: Testbed) -> tuple[int, dict[str, object]]:
    p = tb.dgx("status", "--json")
    assert "Traceback" not in p.stderr, p.stderr
    return p.returncode, json.loads(p.stdout)


def head_container(doc: dict[str, object]) -> dict[str, object] | None:
    nodes = doc["nodes"]
    assert isinstance(nodes, list)
    return next((c for c in nodes[0]["containers"] if c["role"] == "head"), None)


@pytest.fixture(scope="module")
def tb(testbed_docker: Testbed) -> Iterator[Testbed]:
    testbed_docker.dgx("stop", env=ENV)
    remove_cluster_containers(testbed_docker, testbed_docker.name)  # hand-made ones, if any
    testbed_docker.ensure_image()
    testbed_docker.ensure_model()
    yield testbed_docker
    testbed_docker.dgx("stop", env=ENV)


@pytest.fixture(scope="class")
def running(tb: Testbed) -> Iterator[Testbed]:
    """One started cluster for the tests of `TestServing`, stopped after them."""
    p = tb.dgx("start", env=ENV)
    assert p.returncode == 0, p.stderr
    yield tb
    assert tb.dgx("stop", env=ENV).returncode == 0


def test_status_during_start_then_after_it_was_interrupted(tb: Testbed) -> None:
    env = {**ENV, "DGXCLUSTER_CONTAINER__ENV": json.dumps({"DGXCLUSTER_STANDIN_LOAD_S": "600"})}
    full = {k: v for k, v in os.environ.items() if not k.startswith("DGXCLUSTER_")} | env
    proc = spawn([sys.executable, "-m", "dgxcluster", "-i", str(tb.inventory), "start"],
                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=full,
                  cwd=str(REPO))
    during: dict[str, object] = {}
    try:
        deadline = time.monotonic() + 300
        while proc.poll() is None and time.monotonic() < deadline:
            code, doc = status(tb)
            vllm, ray = doc["vllm"], doc["ray"]
            assert isinstance(vllm, dict) and isinstance(ray, dict)
            # Ray's status report is refreshed every few seconds: wait for both nodes in it
            if (vllm["process"] or {}).get("state") == "running" and ray["nodes_alive"] == 2:
                during = doc
                break
            time.sleep(1)
        human = tb.dgx("status").stdout
    finally:
        proc.send_signal(signal.SIGINT)  # start rolls back what it made
        _out, err = proc.communicate(timeout=300)
    assert during, f"vLLM never seen loading; start said:\n{err}"
    assert code == 0
    head = head_container(during)
    assert head is not None and head["state"] == "running"
    ray = during["ray"]
    assert isinstance(ray, dict) and ray["state"] == "up" and ray["nodes_alive"] == 2
    vllm = during["vllm"]
    assert isinstance(vllm, dict) and vllm["state"] == "not serving"
    log = tb.node_exec("node1", "cat", f"/root/.local/state/dgxcluster/{tb.name}/logs/vllm.log")
    assert vllm["process"]["last_line"] and vllm["process"]["last_line"] in log.stdout
    assert "on node1: vLLM process running (loading?)" in human

    code, after = status(tb)  # rolled back: nothing left
    assert code == 0 and head_container(after) is None
    assert after["ray"] == {**after["ray"], "state": "down"}  # type: ignore[dict-item]
    assert after["vllm"]["state"] == "not serving"  # type: ignore[index]


class TestServing:
    """Against one cluster started by `dgxcluster start` (stopped after the class)."""

    def test_smoke_against_the_stand_in(self, running: Testbed) -> None:
        p = running.dgx("smoke", "--concurrency", "2", "--max-tokens", "16", "--json")
        assert p.returncode == 0, p.stderr
        report = json.loads(p.stdout)
        assert report["ok"] and report["model"] == "Qwen/Qwen3-0.6B"
        assert len(report["requests"]) == 2
        for r in report["requests"]:
            assert r["usage_reported"] and r["completion_tokens"] >= 1
            assert 0 <= r["ttft_s"] <= r["total_s"]
            assert "vLLM stand-in" in r["text"]
        human = running.dgx("smoke").stdout
        assert "first token" in human and "decode tok/s" in human and "1/1 ok" in human

    def test_status_while_serving(self, running: Testbed) -> None:
        code, doc = status(running)
        # Ray's own snapshot of GPU use lags (RAY_REFRESH_S, longer on a loaded machine):
        # status says so ("lagging") meanwhile; once it has caught up the counts must be right.
        deadline = time.monotonic() + 60
        while doc["ray"]["lagging"] and time.monotonic() < deadline:  # type: ignore[index]
            time.sleep(2)
            code, doc = status(running)
        assert code == 0
        image = doc["image"]
        assert isinstance(image, dict) and image["consistent"] and image["matches_expected"]
        nodes = doc["nodes"]
        assert isinstance(nodes, list)
        assert [[c["role"] for c in n["containers"]] for n in nodes] == [["head"], ["worker"]]
        assert all(c["state"] == "running" for n in nodes for c in n["containers"])
        assert doc["ray"] == {**doc["ray"], "state": "up", "nodes_alive": 2,  # type: ignore[dict-item]
                              "gpus_total": 2.0, "gpus_used": 2.0}
        vllm = doc["vllm"]
        assert isinstance(vllm, dict) and vllm["state"] == "ready"
        assert vllm["models"] == ["Qwen/Qwen3-0.6B"]

    def test_status_and_smoke_go_through_ssh_when_the_endpoint_does_not_route(
            self, running: Testbed) -> None:
        """Issue 12: the endpoint clients are given (serve.public_host 192.0.2.1, TEST-NET-1,
        which routes nowhere) does not answer from this machine, the head does over SSH:
        status and smoke reach vLLM through a direct-tcpip channel of the head's SSH
        connection (serve.endpoint_via: auto) and say so; `direct` does not."""
        env = {"DGXCLUSTER_SERVE__PUBLIC_HOST": "192.0.2.1"}
        p = running.dgx("status", "--json", env=env)
        assert p.returncode == 0, p.stdout + p.stderr
        vllm = json.loads(p.stdout)["vllm"]
        assert (vllm["state"], vllm["via"], vllm["endpoint"]) == \
            ("ready", "ssh", "http://192.0.2.1:8000/v1"), vllm
        assert vllm["models"] == ["Qwen/Qwen3-0.6B"] and vllm["metrics"] is not None, vllm
        human = flat(running.dgx("status", env=env).stdout)
        assert "ready at http://192.0.2.1:8000/v1" in human
        assert "(through the head's SSH connection)" in human
        s = running.dgx("smoke", "--max-tokens", "8", "--json", env=env)
        assert s.returncode == 0, s.stdout + s.stderr
        report = json.loads(s.stdout)
        assert report["ok"] and report["endpoint"]["via"] == "ssh", report
        direct = running.dgx("status", "--json",
                             env={**env, "DGXCLUSTER_SERVE__ENDPOINT_VIA": "direct"})
        vllm = json.loads(direct.stdout)["vllm"]  # refused or timed out, as the route has it
        assert vllm["state"] in ("unreachable", "not serving") and vllm["via"] is None, vllm

    def test_status_watch_goes_through_ssh_when_the_endpoint_does_not_route(
            self, running: Testbed) -> None:
        """`status --watch --json` with the same unroutable endpoint: the first refresh finds
        the head's SSH connection (auto), the frames after it read /metrics that way."""
        full = {k: v for k, v in os.environ.items() if not k.startswith("DGXCLUSTER_")}
        full["DGXCLUSTER_SERVE__PUBLIC_HOST"] = "192.0.2.1"
        proc = spawn([sys.executable, "-m", "dgxcluster", "-i", str(running.inventory), "status",
                      "--watch", "1", "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                     text=True, env=full, cwd=str(REPO))
        frames: list[dict[str, object]] = []
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                frames.append(json.loads(line))
                if len(frames) == 3:
                    break
            proc.send_signal(signal.SIGINT)
            code = proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert code == 0, proc.stderr.read() if proc.stderr else ""
        assert len(frames) == 3
        for frame in frames:
            vllm = frame["vllm"]
            assert isinstance(vllm, dict)
            assert (vllm["state"], vllm["via"], vllm["endpoint"]) == \
                ("ready", "ssh", "http://192.0.2.1:8000/v1"), vllm
            assert vllm["metrics"] is not None, vllm

    def test_logs_of_a_running_cluster_with_one_node_unreachable(
                self, running: Testbed, tmp_path: Path) -> None:
        tb = running
        tb.tb("cut", "node2")
        try:
            p = tb.dgx("logs", "-o", str(tmp_path))  # this operator knows no HF_TOKEN
        finally:
            tb.tb("heal", "node2")
        assert p.returncode == 3, p.stderr
        folder, archive = bundle_from(p.stdout)
        nodes = manifest(folder)["nodes"]
        assert isinstance(nodes, dict)
        assert nodes["node2"]["reachable"] is False and nodes["node2"]["files"] == []
        assert nodes["node1"]["complete"] and nodes["node1"]["error"] is None
        head = folder / "node1" / "containers" / f"dgxc-{tb.name}-head"
        assert "Local node IP" in (head / "docker.log").read_text()  # Ray's own start-up
        assert (head / "ray" / "gcs_server.out").exists() and (head / "ray" / "raylet.out").exists()
        server = (folder / "node1" / "dgxcluster" / "vllm.log").read_text()
        assert "vLLM stand-in" in server
        env = json.loads((head / "inspect.json").read_text())[0]["Config"]["Env"]
        assert "HF_TOKEN=******" in env  # start passed it through the env-file
        leaks = [w for w, data in every_byte(folder, archive) if TOKEN.encode() in data]
        assert leaks == []


def test_after_stop_keep_containers_then_stop(tb: Testbed, tmp_path: Path) -> None:
    assert tb.dgx("start", env=ENV).returncode == 0
    assert tb.dgx("stop", "--keep-containers", env=ENV).returncode == 0
    code, doc = status(tb)
    head = head_container(doc)
    assert code == 0 and head is not None and head["state"] == "exited"
    assert doc["ray"] == {**doc["ray"], "state": "down"}  # type: ignore[dict-item]
    p = tb.dgx("logs", "-o", str(tmp_path))  # stopped containers' logs, Ray's included
    assert p.returncode == 0, p.stderr
    folder, _ = bundle_from(p.stdout)
    assert (folder / "node2" / "containers" / f"dgxc-{tb.name}-worker" / "ray" / "raylet.out").exists()
    assert tb.dgx("stop", env=ENV).returncode == 0
    code, doc = status(tb)
    assert code == 0 and head_container(doc) is None
    assert doc["vllm"]["state"] == "not serving"  # type: ignore[index]
