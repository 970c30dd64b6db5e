"""Data-parallel replicas with the native executor on the 2-node docker testbed: TP 1 x DP 2,
one replica per node behind the head's one API server (vLLM's internal load balancing).
Real sshd and dockerd; the vLLM stand-in's headless node joins the head's
`--data-parallel-address:--data-parallel-rpc-port` over the fabric network, the head serves
once both engines are ready, and its /metrics counts requests per engine (`engine="N"`).
Each test ends with `tests.leaks` finding nothing on any node.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from tests.conftest import Testbed, flat, run_cli
from tests.e2e.test_native import kill_node2_vllm_once, vllm_log
from tests.e2e.test_start_stop import endpoint_of, leftovers
from tests.leaks import assert_no_leaks

pytestmark = [pytest.mark.e2e, pytest.mark.docker]

TOKEN = f"hf_dp{uuid.uuid4().hex}"
ENV = {"HF_TOKEN": TOKEN, "COLUMNS": "300"}
MODEL = "Qwen/Qwen3-0.6B"


@pytest.fixture(scope="module")
def tb(testbed_docker: Testbed) -> Iterator[Testbed]:
    testbed_docker.ensure_image()
    testbed_docker.ensure_model(MODEL)
    testbed_docker.dgx("stop", env=ENV)
    yield testbed_docker
    testbed_docker.dgx("stop", env=ENV)


def dp_inventory(tb: Testbed, path: Path, load_s: float | None = None) -> Path:
    """The testbed's inventory serving TP 1 x DP 2 with the native executor."""
    data = tb.portable_doc()
    data["serve"].update(executor="native", tensor_parallel_size=1, data_parallel_size=2)
    if load_s is not None:  # replicas that load long enough for a fault to land meanwhile
        data["container"].setdefault("env", {})["DGXCLUSTER_STANDIN_LOAD_S"] = str(load_s)
    path.write_text(yaml.safe_dump(data))
    return path


def dgx(inv: Path, *args: str) -> tuple[int, str, str]:
    p = run_cli("-i", str(inv), *args, env=ENV, timeout=900)
    return p.returncode, p.stdout, p.stderr


def engine_requests(metrics: str) -> dict[str, float]:
    """vllm:request_success_total summed per engine label."""
    out: dict[str, float] = {}
    for m in re.finditer(r'^vllm:request_success_total\{[^}]*engine="(\d+)"[^}]*\} (\S+)$',
                         metrics, re.M):
        out[m.group(1)] = out.get(m.group(1), 0.0) + float(m.group(2))
    return out


def test_dp2_serves_spreads_requests_shows_replicas_and_stop_leaves_nothing(
        tb: Testbed, tmp_path: Path) -> None:
    inv = dp_inventory(tb, tmp_path / "dp.yaml")
    rc, dry, err = dgx(inv, "start", "--dry-run")
    assert rc == 0, err
    assert "--data-parallel-rpc-port 29550" in dry and "--data-parallel-start-rank 1 --headless" in dry
    rc, out, err = dgx(inv, "start")
    assert rc == 0, err
    shown = flat(out)
    assert "node2 headless changed started dgxc-" in shown and "node1 rank0 changed started" in shown
    assert TOKEN not in out + err
    url = endpoint_of(out)
    smoke = run_cli("-i", str(inv), "smoke", env=ENV, timeout=300)
    assert smoke.returncode == 0, smoke.stdout + smoke.stderr
    for i in range(4):
        chat = httpx.post(f"{url}/chat/completions", timeout=30, json={
            "model": MODEL, "messages": [{"role": "user", "content": f"ping {i}"}],
            "max_tokens": 8})
        assert chat.status_code == 200, chat.text
    # both replicas answered requests: the head's front end spread them over the engines
    per_engine = engine_requests(httpx.get(url.removesuffix("/v1") + "/metrics", timeout=30).text)
    assert set(per_engine) == {"0", "1"} and all(v > 0 for v in per_engine.values()), per_engine
    # the replica on node2 joined the head's front end over the fabric, at the rpc port
    nodes = tb.status()["nodes"]
    assert isinstance(nodes, list)
    head_ip = next(n["fabric_ip"] for n in nodes if n["node"] == "node1")
    other, head = vllm_log(tb, "node2"), vllm_log(tb, "node1")
    assert ("Launching 1 data parallel engine(s) in headless mode, with head node address "
            f"tcp://{head_ip}:29550.") in other
    assert "Started DP Coordinator process" in head and "Application startup complete" in head
    assert "Starting vLLM API server" not in other
    rc, out, err = dgx(inv, "status", "--json")
    assert rc == 0, err
    st = json.loads(out)
    assert st["executor"] == "native" and st["layout"] == "DP 2 x TP 1"
    assert [(x["node"], x["rank"], x["replica"], x["alive"]) for x in st["ranks"]] == [
        ("node1", 0, "0", True), ("node2", 1, "1", True)]
    assert "vLLM ranks (native executor, DP 2 x TP 1): 2/2 alive" in flat(dgx(inv, "status")[1])
    rc, out, err = dgx(inv, "stop")
    assert rc == 0, err
    assert leftovers(tb) == {"node1": [], "node2": []}
    assert_no_leaks(tb)


def test_a_headless_replica_killed_while_loading_fails_the_start_naming_its_node(
        tb: Testbed, tmp_path: Path) -> None:
    inv = dp_inventory(tb, tmp_path / "slow.yaml", load_s=60)
    rc, run = kill_node2_vllm_once(tb, r"^node2: vllm-ready: rank 1 joined", "-i", str(inv),
                                   "start", env=ENV)
    err = run.stderr
    assert rc == 1, err
    assert "start failed at step 'vllm-ready'" in err
    assert re.search(r"node2: step 'vllm-ready' failed: vLLM rank 1 exited with status 137", err), err
    assert err.index("node2: step 'vllm-ready'") < err.find("node1: step 'vllm-ready'") or \
        "node1: step 'vllm-ready'" not in err  # the replica that left first is named first
    assert "rolled back" in err and TOKEN not in err + run.stdout
    assert leftovers(tb) == {"node1": [], "node2": []}
    assert_no_leaks(tb)
