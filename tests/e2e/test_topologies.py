"""Beyond a cabled pair, on the testbed: a 3-node ring (each cable twin its own /24), 4
nodes through a switch and 2 nodes cabled asymmetrically (port 1 of node1 to port 0 of
node2, per-node rails). verify-ib per topology (every cable of the ring, every pair on the
switch, the asymmetric pair; a pulled cable is named), then serving on each: on the ring TP=2
on a subset of the nodes with Ray, DP 3 x TP 1 with the native executor and TP 1 x PP 3 with
both; on the switch TP 2 x PP 2 with both; on the asymmetric pair TP 2 with both. Each:
start, status, a chat completion, stop. An idle node is left alone by start.

Real sshd, dockerd and Ray per node; the RDMA/GPU tools are the testbed's simulated hardware
(`--simhw auto`, following the cabling and cuts) and vLLM is the stand-in.
One testbed per topology, module-scoped; the cluster is started once per topology.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.conftest import PREFIX, REPO, TESTBED, Testbed, _down, run_cli
from tests.e2e.test_data_parallel import engine_requests
from tests.e2e.test_native import vllm_log

pytestmark = [pytest.mark.e2e, pytest.mark.docker]

ENV = {"HF_TOKEN": f"hf_e2e{uuid.uuid4().hex}"}
MODEL = "Qwen/Qwen3-0.6B"


def _up(name: str, n: int, topology: str, *extra: str) -> Testbed:
    proc = subprocess.run([str(TESTBED), "--name", name, "up", str(n), "--docker", "--topology",
                           topology, "--simhw", "auto", *extra], capture_output=True, text=True,
                          timeout=1800, check=False)
    if proc.returncode != 0:
        pytest.fail(f"testbed up failed: {proc.stderr}\n{proc.stdout}")
    stem = f"testbed-{name}"
    return Testbed(name, n, True, REPO / "inventory" / f"{stem}.yaml",
                   REPO / "inventory" / f"{stem}.known_hosts")


def _prepare(tb: Testbed, serving: list[str]) -> None:
    """The image on the serving nodes only (the idle ones need none), the model everywhere."""
    subprocess.run([str(REPO / "images" / "testbed" / "fetch-wheels")], check=True,
                   capture_output=True, timeout=900)
    p = tb.dgx("build", *[a for n in serving for a in ("--node", n)], timeout=1800)
    if p.returncode != 0:
        pytest.fail(f"dgxcluster build failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
    tb.ensure_model(MODEL)


def inventory(tb: Testbed, path: Path, serving: list[str] | None = None,
              dp: int | None = None, pp: int | None = None, executor: str = "ray",
              tp: int = 1) -> Path:
    """The testbed's inventory: serving TP=2 on `serving` when given (or DP `dp` x TP `tp` with
    the native executor, or TP `tp` x PP `pp` with `executor`), else with the DGX container
    options (which the testbed's dockerd cannot give) so verify-ib can pass all."""
    data = tb.portable_doc()
    if dp:
        data["serve"].update(executor="native", tensor_parallel_size=tp, data_parallel_size=dp)
    elif pp:
        data["serve"].update(executor=executor, tensor_parallel_size=tp, pipeline_parallel_size=pp)
    elif serving:
        data["serve"].update(tensor_parallel_size=2, nodes=serving, executor=executor)
    else:
        data["container"]["devices"] = ["/dev/infiniband"]
        data["container"]["ulimits"] = {"memlock": "-1"}
    path.write_text(yaml.safe_dump(data))
    return path


def verify(inv: Path) -> tuple[int, list[dict[str, Any]]]:
    p = run_cli("-i", str(inv), "verify-ib", "--json", timeout=180)
    assert "Traceback" not in p.stderr, p.stderr
    return p.returncode, json.loads(p.stdout)


def verify_cut(tb: Testbed, inv: Path, node: str, peer: str
               ) -> tuple[list[dict[str, Any]], set[str], dict[str, Any]]:
    """verify-ib with the cable between `node` and `peer` pulled (plugged back after): it
    fails; the rows, the failed links' names and the (failed) cabling row."""
    tb.tb("cut", node, "--link", peer)
    try:
        rc, rows = verify(inv)
    finally:
        tb.tb("heal", node, "--link", peer)
    assert rc == 1, rows
    cabling = next(r for r in rows if r["check"] == "cabling")
    assert cabling["status"] == "FAIL", cabling
    return rows, {r["node"] for r in rows if r["check"] == "link" and r["status"] == "FAIL"}, cabling


def not_passing(rows: list[dict[str, Any]]) -> set[tuple[str, str]]:
    return {(r["node"], r["check"]) for r in rows if r["status"] != "PASS"}


def containers(tb: Testbed, node: str) -> list[str]:
    out = tb.node_exec(node, "docker", "ps", "-a", "--filter",
                       f"label=dgxcluster.cluster={tb.name}", "--format", "{{.Names}}").stdout
    return out.split()


def serve_and_check(tb: Testbed, inv: Path, serving: list[str], layout: str | None = None,
                    while_serving: Callable[[], None] | None = None) -> None:
    """start on `serving`; status shows Ray on exactly those (or, with the native executor's
    `layout`, one live rank per node in order); a chat answers; a second start changes
    nothing; stop leaves no container on any node. `while_serving` runs before the stop."""
    idle = [n for n in tb.nodes if n not in serving]
    start = run_cli("-i", str(inv), "start", env=ENV, timeout=900)
    assert start.returncode == 0, start.stdout + start.stderr
    for node in idle:
        assert containers(tb, node) == [], node  # start left the idle node alone
    for node in serving:
        assert len(containers(tb, node)) == 1, node
    status = run_cli("-i", str(inv), "status", "--json", env=ENV, timeout=180)
    assert status.returncode == 0, status.stdout + status.stderr
    st = json.loads(status.stdout)
    if layout:
        assert st["executor"] == "native" and st["layout"] == layout, st
        assert [(x["node"], x["rank"], x["alive"]) for x in st["ranks"]] == [
            (n, i, True) for i, n in enumerate(serving)], st["ranks"]
    else:
        assert st["ray"]["nodes_alive"] == len(serving) == st["ray"]["nodes_expected"], st["ray"]
        assert st["ray"]["gpus_total"] == len(serving)
    url = next(ln.split()[1] for ln in start.stdout.splitlines() if ln.startswith("endpoint: "))
    r = httpx.post(f"{url}/chat/completions", timeout=60, json={
        "model": MODEL, "max_tokens": 8, "messages": [{"role": "user", "content": "hello"}]})
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"]
    again = run_cli("-i", str(inv), "start", env=ENV, timeout=300)
    assert again.returncode == 0 and "already running" in again.stdout.lower(), again.stdout
    if while_serving is not None:
        while_serving()
    stop = run_cli("-i", str(inv), "stop", env=ENV, timeout=300)
    assert stop.returncode == 0, stop.stdout + stop.stderr
    assert all(containers(tb, n) == [] for n in tb.nodes)


@pytest.fixture(scope="module")
def ring3() -> Iterator[Testbed]:
    tb = _up(f"{PREFIX}ring", 3, "ring")
    _prepare(tb, tb.nodes)  # node3 serves only in DP 3
    yield tb
    tb.dgx("stop", env=ENV)
    _down(tb.name)


@pytest.fixture(scope="module")
def switch4() -> Iterator[Testbed]:
    """Four nodes on one switch; the image is built (once, distributed) only for the start
    test, after verify-ib."""
    tb = _up(f"{PREFIX}sw4", 4, "switch")
    yield tb
    tb.dgx("stop", env=ENV)
    _down(tb.name)


def test_ring3_verify_ib_checks_every_cable_and_names_a_pulled_one(ring3: Testbed,
                                                                   tmp_path: Path) -> None:
    inv = inventory(ring3, tmp_path / "inv.yaml")
    rc, rows = verify(inv)
    assert rc == 0, not_passing(rows)
    links = [r for r in rows if r["check"] == "link"]
    assert len(links) == 6  # 3 cables x 2 twins, each its own subnet
    assert {r["node"] for r in links} >= {"node1:enp1s0f0np0<->node2:enp1s0f1np1",
                                          "node3:enp1s0f0np0<->node1:enp1s0f1np1"}
    rows, failed_links, cabling = verify_cut(ring3, inv, "node2", "node3")
    assert failed_links == {"node2:enp1s0f0np0<->node3:enp1s0f1np1",
                            "node2:enP2p1s0f0np0<->node3:enP2p1s0f1np1"}
    assert "2 of 6 links not active" in cabling["detail"]
    assert ("node1", "ping") not in not_passing(rows)  # node1's own cables are fine


def test_ring3_tp2_on_two_of_three_nodes_with_ray(ring3: Testbed, tmp_path: Path) -> None:
    serve_and_check(ring3, inventory(ring3, tmp_path / "inv.yaml", ["node1", "node2"]),
                    ["node1", "node2"])


def test_ring3_dp3_native_one_replica_per_node(ring3: Testbed, tmp_path: Path) -> None:
    """DP 3 x TP 1: each node its own replica behind the head's one API server, the
    replicas joining it over the ring's per-cable subnets."""
    serve_and_check(ring3, inventory(ring3, tmp_path / "inv.yaml", dp=3), ring3.nodes,
                    layout="DP 3 x TP 1")


@pytest.mark.parametrize("executor", ["native", "ray"])
def test_ring3_pp3_one_pipeline_stage_per_node(ring3: Testbed, tmp_path: Path,
                                               executor: str) -> None:
    """TP 1 x PP 3: a stage per node, each stage's neighbour one cable away (a ring); with
    the native executor a rank per node in stage order, with Ray a GPU per node."""
    serve_and_check(ring3, inventory(ring3, tmp_path / "inv.yaml", pp=3, executor=executor),
                    ring3.nodes, layout="TP 1 x PP 3" if executor == "native" else None)


def test_switch4_verify_ib_pings_every_pair(switch4: Testbed, tmp_path: Path) -> None:
    rc, rows = verify(inventory(switch4, tmp_path / "inv.yaml"))
    assert rc == 0, not_passing(rows)
    assert len([r for r in rows if r["check"] == "link"]) == 6 * 2  # every pair, both rails
    pings = {r["node"]: r["detail"] for r in rows if r["check"] == "ping"}
    for node in switch4.nodes:
        for peer in switch4.nodes:
            if peer != node:
                assert f"{peer} " in pings[node], (node, pings[node])


# the one cable's two twins: port 1 of node1 to port 0 of node2
ASYM_LINKS = {"node1:enp1s0f1np1<->node2:enp1s0f0np0", "node1:enP2p1s0f1np1<->node2:enP2p1s0f0np0"}


@pytest.fixture(scope="module")
def asym2() -> Iterator[Testbed]:
    """Two nodes cabled port 1 (node1) to port 0 (node2): the testbed writes node2's own
    `rails` (enp1s0f0np0/rocep1s0f0, enP2p1s0f0np0/roceP2p1s0f0) into the inventory."""
    tb = _up(f"{PREFIX}asym", 2, "direct", "--ports", "1,0")
    yield tb
    tb.dgx("stop", env=ENV)
    _down(tb.name)


def test_asymmetric_cabling_passes_with_per_node_rails_and_names_a_pulled_cable(
        asym2: Testbed, tmp_path: Path) -> None:
    inv = inventory(asym2, tmp_path / "inv.yaml")
    nodes = {n["name"]: n for n in yaml.safe_load(inv.read_text())["nodes"]}
    assert "rails" not in nodes["node1"]
    assert [r["interface"] for r in nodes["node2"]["rails"]] == ["enp1s0f0np0", "enP2p1s0f0np0"]
    rc, rows = verify(inv)
    assert rc == 0, not_passing(rows)
    cabling = next(r for r in rows if r["check"] == "cabling")
    assert cabling["status"] == "PASS" and "(rails on" not in cabling["detail"], cabling
    assert {r["node"] for r in rows if r["check"] == "link"} == ASYM_LINKS
    _, failed, cabling = verify_cut(asym2, inv, "node1", "node2")
    assert failed == ASYM_LINKS, failed  # both twins of the one cable, each end named
    assert "node1 (rails on" in cabling["detail"] and "node2 (rails on" in cabling["detail"]


@pytest.mark.parametrize("executor", ["native", "ray"])
def test_switch4_tp2_pp2_every_node_a_rank(switch4: Testbed, tmp_path: Path,
                                            executor: str) -> None:
    """TP 2 x PP 2 over the four nodes through the switch: native, ranks 0-3 one per node
    (stage 0 on node1+node2, stage 1 on node3+node4); Ray, a GPU per node."""
    _prepare(switch4, switch4.nodes)  # built once: the second case finds it there
    inv = inventory(switch4, tmp_path / "inv.yaml", pp=2, tp=2, executor=executor)
    serve_and_check(switch4, inv, switch4.nodes,
                    layout="TP 2 x PP 2" if executor == "native" else None)


def test_switch4_tp2_dp2_native_replicas_span_two_nodes_each(switch4: Testbed,
                                                              tmp_path: Path) -> None:
    """TP 2 x DP 2 over the four nodes: replica 0 on node1+node2, replica 1 on node3+node4.
    Each replica's leader (node1, node3) runs its engine and forms the replica's process group
    at its own fabric address with its follower; node3's engine joins node1's front end; the
    one endpoint spreads requests over both replicas."""
    _prepare(switch4, switch4.nodes)
    inv = inventory(switch4, tmp_path / "inv.yaml", tp=2, dp=2)
    ips = {n["node"]: n["fabric_ip"] for n in switch4.status()["nodes"]}  # type: ignore[union-attr]

    def spread() -> None:
        st = json.loads(run_cli("-i", str(inv), "status", "--json", env=ENV, timeout=180).stdout)
        assert [(x["node"], x["replica"]) for x in st["ranks"]] == [
            ("node1", "0"), ("node2", "0"), ("node3", "1"), ("node4", "1")], st["ranks"]
        base = str(st["vllm"]["endpoint"]).removesuffix("/v1")
        for i in range(6):
            r = httpx.post(f"{base}/v1/chat/completions", timeout=60, json={
                "model": MODEL, "max_tokens": 8, "messages": [{"role": "user", "content": f"{i}"}]})
            assert r.status_code == 200, r.text
        per_engine = engine_requests(httpx.get(f"{base}/metrics", timeout=30).text)
        assert set(per_engine) == {"0", "1"} and all(v > 0 for v in per_engine.values()), \
            per_engine
        leader = vllm_log(switch4, "node3")
        assert ("Launching 1 data parallel engine(s) in headless mode, with head node address "
                f"tcp://{ips['node1']}:29550.") in leader
        assert f"master_addr={ips['node3']}" in leader
        for follower, at in (("node2", "node1"), ("node4", "node3")):
            assert (f"headless multiproc executor, with head node address {ips[at]}:29501 for "
                    "torch.distributed process group.") in vllm_log(switch4, follower)

    serve_and_check(switch4, inv, switch4.nodes, layout="DP 2 x TP 2", while_serving=spread)


def _container_env(tb: Testbed, node: str, key: str) -> str:
    out = tb.node_exec(node, "sh", "-c", "docker inspect -f '{{range .Config.Env}}{{println .}}"
                       "{{end}}' $(docker ps -q --filter label=dgxcluster.cluster=" + tb.name + ")"
                       ).stdout
    return next((ln.split("=", 1)[1] for ln in out.splitlines() if ln.startswith(key + "=")), "")


@pytest.mark.parametrize("executor", ["native", "ray"])
def test_asymmetric_cabling_serves_tp2_each_node_on_its_own_rails(
        asym2: Testbed, tmp_path: Path, executor: str) -> None:
    """TP 2 over the asymmetric pair: each node's NCCL_IB_HCA is its own rails' devices
    (node1 port 1, node2 port 0), and the pair serves: start, status, chat, stop."""
    _prepare(asym2, asym2.nodes)
    inv = inventory(asym2, tmp_path / "inv.yaml", ["node1", "node2"], executor=executor)
    seen: dict[str, str] = {}

    def check_env() -> None:
        for node in asym2.nodes:
            seen[node] = _container_env(asym2, node, "NCCL_IB_HCA")

    serve_and_check(asym2, inv, asym2.nodes, layout="TP 2" if executor == "native" else None,
                    while_serving=check_env)
    assert seen == {"node1": "rocep1s0f1,roceP2p1s0f1", "node2": "rocep1s0f0,roceP2p1s0f0"}, seen
