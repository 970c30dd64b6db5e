"""`start --executor native` (vLLM's own multi-node executor, no Ray) on the 2-node docker
testbed: real sshd and dockerd; the vLLM stand-in's ranks join over the fabric network
(rank 0 at the head's fabric IP and --master-port, Gloo bound to GLOO_SOCKET_IFNAME).

The fault and leak suites' native variants live here too, on one module-scoped testbed
(CI time): a rank killed while loading, Ctrl-C while the ranks start, rank 0 killed while
serving, a worker cut off before start or after its rank joined, a wrong GLOO_SOCKET_IFNAME,
a flag vLLM refuses let through, dockerd stopped on the headless node; each ends with
`tests.leaks` finding nothing on any node and no HF_TOKEN on any process command line.
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

from tests.clirun import Background, CmdlineSampler
from tests.conftest import Testbed, flat, run_cli
from tests.e2e.test_start_stop import STATE, containers, endpoint_of, leftovers
from tests.leaks import assert_no_leaks, node_leaks

pytestmark = [pytest.mark.e2e, pytest.mark.docker]

TOKEN = f"hf_native{uuid.uuid4().hex}"
ENV = {"HF_TOKEN": TOKEN, "COLUMNS": "300"}
NATIVE = ("--executor", "native")
#: ranks that take long enough to load for a fault to land while they do
SLOW = {**ENV, "DGXCLUSTER_CONTAINER__ENV": json.dumps({"DGXCLUSTER_STANDIN_LOAD_S": "60"})}


@pytest.fixture(scope="module")
def tb(testbed_docker: Testbed) -> Iterator[Testbed]:
    testbed_docker.ensure_image()
    testbed_docker.ensure_model()
    testbed_docker.dgx("stop", env=ENV)
    yield testbed_docker
    testbed_docker.tb("heal", "node2", check=False)
    testbed_docker.dgx("stop", env=ENV)


def vllm_log(tb: Testbed, node: str) -> str:
    return tb.node_exec(node, "sh", "-c", f"cat {STATE}/{tb.name}/logs/vllm.log 2>/dev/null; true").stdout


def test_native_serves_is_a_noop_twice_needs_restart_for_ray_and_stop_leaves_nothing(
        tb: Testbed, tmp_path: Path) -> None:
    r = tb.dgx("start", *NATIVE, env=ENV)
    assert r.returncode == 0, r.stderr
    out = flat(r.stdout)
    assert "node2 headless changed started dgxc-" in out and "node1 rank0 changed started" in out
    assert "ray-" not in out and TOKEN not in r.stdout + r.stderr
    url = endpoint_of(r.stdout)
    chat = httpx.post(f"{url}/chat/completions", timeout=30, json={
        "model": "Qwen/Qwen3-0.6B", "messages": [{"role": "user", "content": "ping"}],
        "max_tokens": 16})
    assert chat.status_code == 200, chat.text
    assert "ping" in chat.json()["choices"][0]["message"]["content"]
    # the ranks met over the fabric: rank 0's store on the head's fabric address
    nodes = tb.status()["nodes"]
    assert isinstance(nodes, list)
    head_ip = next(n["fabric_ip"] for n in nodes if n["node"] == "node1")
    worker, head = vllm_log(tb, "node2"), vllm_log(tb, "node1")
    assert (f"Launching vLLM (v0.20.1) headless multiproc executor, with head node address "
            f"{head_ip}:29501 for torch.distributed process group.") in worker
    assert "rank 1 in world size 2 is assigned as" in worker
    assert "rank 0 in world size 2 is assigned as" in head and "Application startup complete" in head
    assert "Starting vLLM API server" not in worker  # the headless rank serves no API
    # no Ray anywhere: each container runs its rank under the launcher
    for node in tb.nodes:
        ps = tb.tb("ps", node).stdout
        assert "raylet" not in ps and "gcs_server" not in ps
        assert "vllm serve Qwen/Qwen3-0.6B" in ps
    status = tb.dgx("status", "--json", env=ENV)
    assert status.returncode == 0, status.stderr
    st = json.loads(status.stdout)
    assert st["executor"] == "native" and st["vllm"]["state"] == "ready"
    assert [(x["node"], x["rank"], x["alive"]) for x in st["ranks"]] == [
        ("node1", 0, True), ("node2", 1, True)]
    shown = flat(tb.dgx("status", env=ENV).stdout)
    assert "vLLM ranks (native executor, TP 2): 2/2 alive" in shown
    # logs gathers every rank's log (each node's log folder)
    logs = tb.dgx("logs", "-o", str(tmp_path), env=ENV)
    assert logs.returncode == 0, logs.stderr
    for node, needle in (("node1", "rank 0 in world size"), ("node2", "headless multiproc")):
        [found] = list(tmp_path.glob(f"*/{node}/dgxcluster/vllm.log"))
        assert needle in found.read_text()
    before = {n: containers(tb, n) for n in tb.nodes}

    again = tb.dgx("start", *NATIVE, env=ENV)
    assert again.returncode == 0, again.stderr
    assert "already running" in again.stdout
    assert {n: containers(tb, n) for n in tb.nodes} == before

    refused = tb.dgx("start", "--executor", "ray", env=ENV)
    assert refused.returncode == 1
    assert "different configuration is running" in refused.stderr
    assert "--restart" in refused.stderr
    assert {n: containers(tb, n) for n in tb.nodes} == before

    ray = tb.dgx("start", "--executor", "ray", "--restart", env=ENV)
    assert ray.returncode == 0, ray.stderr
    assert "ray-workers" in ray.stdout and "ready in" in ray.stdout
    st = json.loads(tb.dgx("status", "--json", env=ENV).stdout)
    assert st["executor"] == "ray" and st["ranks"] is None and st["ray"]["nodes_alive"] == 2
    models = httpx.get(f"{url}/models", timeout=30).json()
    assert [m["id"] for m in models["data"]] == ["Qwen/Qwen3-0.6B"]

    stop = tb.dgx("stop", env=ENV)
    assert stop.returncode == 0, stop.stderr
    assert leftovers(tb) == {"node1": [], "node2": []}
    assert_no_leaks(tb)


def test_native_stop_stops_rank_0_then_the_headless_rank(tb: Testbed) -> None:
    r = tb.dgx("start", *NATIVE, env=ENV)
    assert r.returncode == 0, r.stderr
    stop = tb.dgx("stop", env=ENV)
    assert stop.returncode == 0, stop.stderr
    out = flat(stop.stdout)
    assert "node1 vllm-stop changed exited after SIGTERM" in out
    assert "node2 vllm-stop changed headless rank: exited after SIGTERM" in out
    head, worker = vllm_log(tb, "node1"), vllm_log(tb, "node2")
    assert "Application shutdown complete" in head  # rank 0 went gracefully, first
    assert "node rank 0 left the process group" in worker  # the headless rank saw it go
    assert "received signal 15" in worker.split("node rank 0 left")[1]  # then was stopped
    assert leftovers(tb) == {"node1": [], "node2": []}
    assert_no_leaks(tb)


def test_a_worker_cut_off_before_start_is_named_and_nothing_changes(tb: Testbed) -> None:
    tb.tb("cut", "node2")
    try:
        r = tb.dgx("start", *NATIVE, env={**ENV, "DGXCLUSTER_SSH__CONNECT_TIMEOUT": "4"})
    finally:
        tb.tb("heal", "node2")
    assert r.returncode == 3, r.stderr
    assert "start failed at step 'preflight'" in r.stderr and "node2: unreachable" in r.stderr
    assert "nothing was changed" in r.stderr
    assert leftovers(tb) == {"node1": [], "node2": []}
    assert_no_leaks(tb, wait_s=90)  # sshd sessions of the cut connection end on their own
    ok = tb.dgx("start", *NATIVE, env=ENV)  # healed: the next start works
    assert ok.returncode == 0, ok.stderr
    assert tb.dgx("stop", env=ENV).returncode == 0


def test_a_wrong_gloo_socket_ifname_fails_the_start_with_glooss_error(tb: Testbed) -> None:
    """A GLOO_SOCKET_IFNAME naming no interface breaks vLLM's process group on a real
    cluster; on the testbed it must break `start` the same way, and say so."""
    env = {**ENV, "DGXCLUSTER_CONTAINER__ENV": json.dumps({"GLOO_SOCKET_IFNAME": "enp9s9"})}
    r = tb.dgx("start", *NATIVE, env=env)
    assert r.returncode == 1, r.stderr
    assert "start failed at step 'vllm-ready'" in r.stderr
    assert re.search(r"node[12]: step 'vllm-ready' failed: vLLM rank [01] exited with status 1",
                     r.stderr), r.stderr
    assert "ifa != nullptr. Unable to find address for: enp9s9" in r.stderr
    assert "rolled back" in r.stderr
    assert leftovers(tb) == {"node1": [], "node2": []}
    assert_no_leaks(tb)


def test_a_headless_rank_killed_while_loading_fails_the_start_naming_its_node(
        tb: Testbed) -> None:
    """The rank on node2 dies after joining, while the model loads: start ends at once
    (not at the readiness timeout), names node2 first with its log, and rolls back."""
    with CmdlineSampler(TOKEN) as sampler:
        rc, run = kill_node2_vllm_once(tb, r"^node2: vllm-ready: rank 1 joined", "-i",
                                       str(tb.inventory), "start", *NATIVE, env=SLOW)
    err = run.stderr
    assert rc == 1, err
    assert "start failed at step 'vllm-ready'" in err
    assert re.search(r"node2: step 'vllm-ready' failed: vLLM rank 1 exited with status 137", err), err
    assert err.index("node2: step 'vllm-ready'") < err.find("node1: step 'vllm-ready'") or \
        "node1: step 'vllm-ready'" not in err  # the rank that left first is named first
    assert re.search(r"Starting to load model|Loading safetensors checkpoint shards", err), err
    assert "rolled back" in err and TOKEN not in err + run.stdout
    assert sampler.hits == []
    assert leftovers(tb) == {"node1": [], "node2": []}
    assert_no_leaks(tb)


def kill_node2_vllm_once(tb: Testbed, shown: str, *args: str,
                         env: dict[str, str]) -> tuple[int, Background]:
    """The CLI (`args`) in the background; once its output shows `shown`, node2's vLLM is
    killed (SIGKILL, by the pid its launcher recorded). Its exit status, and the run."""
    run = Background(*args, env=env)
    try:
        run.wait_for(shown, timeout=300)
        kill = tb.node_exec("node2", "docker", "exec", f"dgxc-{tb.name}-worker", "sh", "-c",
                            "kill -9 $(cat /var/log/dgxcluster/vllm.pid)", check=False)
        # 137: the exec'd shell went down with the container, whose main process (the
        # launcher) ends as soon as vLLM does
        assert kill.returncode in (0, 137), kill.stderr
        rc = run.finish()
    finally:
        if run.proc.poll() is None:
            run.interrupt()
            run.finish()
    return rc, run


def test_ctrl_c_while_the_ranks_start_rolls_back_every_rank(tb: Testbed) -> None:
    """Ctrl-C while rank 0's container is being created (the headless rank runs already)."""
    run = Background("-i", str(tb.inventory), "start", *NATIVE, env=SLOW)
    try:
        run.wait_for(r"^node1: rank0: docker run", timeout=300)
        run.interrupt()
        rc = run.finish()
    finally:
        if run.proc.poll() is None:
            run.proc.kill()
    err = run.stderr
    assert rc == 130, err
    assert re.search(r"start interrupted at step '(rank0|vllm-ready)': rolling back", err), err
    assert f"removed dgxc-{tb.name}-head" in err and f"removed dgxc-{tb.name}-worker" in err
    assert leftovers(tb) == {"node1": [], "node2": []}
    assert_no_leaks(tb)


def test_rank_0_killed_while_serving_shows_in_status_and_stop_cleans_up(tb: Testbed) -> None:
    r = tb.dgx("start", *NATIVE, env=ENV)
    assert r.returncode == 0, r.stderr
    head = f"dgxc-{tb.name}-head"
    tb.node_exec("node1", "docker", "kill", head)
    st = json.loads(tb.dgx("status", "--json", env=ENV).stdout)
    assert st["executor"] == "native" and st["vllm"]["state"] != "ready"
    ranks = {x["node"]: x for x in st["ranks"]}
    assert ranks["node1"]["alive"] is False
    # the headless rank saw rank 0 go (its pair socket closed) and says so in its last line
    assert "node rank 0 left the process group" in vllm_log(tb, "node2")
    stop = tb.dgx("stop", env=ENV)
    assert stop.returncode == 0, stop.stderr
    text = flat(stop.stdout)
    assert f"removed {head}" in text and f"removed dgxc-{tb.name}-worker" in text
    assert leftovers(tb) == {"node1": [], "node2": []}
    assert_no_leaks(tb)


# -- the fault suite's other faults, with the native executor (tests/e2e/test_faults.py has
# -- them for Ray) -----------------------------------------------------------------------------

def test_a_flag_vllm_refuses_fails_the_native_start_fast_with_vllms_message(tb: Testbed) -> None:
    """--swap-space (removed from vLLM 0.20.1) let through with --skip-flag-check: every
    rank's `vllm serve` exits 2 with vLLM's parser's words; start fails at once (not at its
    ready timeout), naming the rank, and rolls back every rank."""
    removed = {**ENV, "DGXCLUSTER_SERVE__EXTRA_ARGS": json.dumps(["--swap-space", "4"])}
    refused = tb.dgx("start", *NATIVE, env=removed)
    assert refused.returncode == 2 and "has no option --swap-space" in refused.stderr
    assert leftovers(tb) == {"node1": [], "node2": []}
    r = tb.dgx("start", *NATIVE, "--skip-flag-check", env=removed)
    assert r.returncode == 1, r.stderr
    assert "passed unchecked: --skip-flag-check" in r.stderr
    assert re.search(r"start failed at step '(vllm-ready|rank0)'", r.stderr), r.stderr
    assert re.search(r"vLLM rank [01] exited with status 2", r.stderr), r.stderr
    assert "vllm: error: unrecognized arguments: --swap-space 4" in r.stderr
    assert "ready within" not in r.stderr and "rolled back" in r.stderr
    assert leftovers(tb) == {"node1": [], "node2": []}
    assert_no_leaks(tb)


def test_dockerd_stopped_on_the_headless_node(tb: Testbed) -> None:
    """dockerd gone on node2 while serving: stop cleans node1 and names node2; start refuses
    at preflight changing nothing; once dockerd is back, stop removes the exited rank."""
    r = tb.dgx("start", *NATIVE, env=ENV)
    assert r.returncode == 0, r.stderr
    tb.tb("dockerd", "node2", "stop")
    try:
        stop = tb.dgx("stop", env=ENV)
        assert stop.returncode == 1, stop.stderr
        assert re.search(r"node2: not stopped \(step 'stop' failed: docker is not usable",
                         stop.stderr), stop.stderr
        assert node_leaks(tb, "node1") == []
        refused = tb.dgx("start", *NATIVE, env=ENV)
        assert refused.returncode == 1, refused.stderr
        assert "start failed at step 'preflight'" in refused.stderr
        assert re.search(r"node2: .*docker is not usable", refused.stderr), refused.stderr
        assert "nothing was changed" in refused.stderr
        assert node_leaks(tb, "node1") == []
    finally:
        tb.tb("dockerd", "node2", "start")
    states = tb.node_exec("node2", "docker", "ps", "-a", "--filter",
                          f"label=dgxcluster.cluster={tb.name}", "--format",
                          "{{.Names}} {{.State}}").stdout.split("\n")[:-1]
    assert states == [f"dgxc-{tb.name}-worker exited"]  # dockerd stopped it as it went down
    assert tb.dgx("stop", env=ENV).returncode == 0
    assert leftovers(tb) == {"node1": [], "node2": []}
    assert_no_leaks(tb)


def test_a_worker_cut_off_after_its_rank_joined_is_reported_and_cleaned_later(
        tb: Testbed) -> None:
    """node2 loses the network while rank 0 loads (its rank joined): start fails naming
    node2, rolls back node1, says what it left on node2; the next start replaces it."""
    run = Background("-i", str(tb.inventory), "start", *NATIVE,
                     env={**SLOW, "DGXCLUSTER_SSH__CONNECT_TIMEOUT": "4"})
    try:
        run.wait_for(r"^node2: vllm-ready: rank 1 joined", timeout=300)
        tb.tb("cut", "node2")
        rc = run.finish()
    finally:
        tb.tb("heal", "node2")
        if run.proc.poll() is None:
            run.interrupt()
            run.finish()
    err = run.stderr
    assert rc in (1, 3), err
    assert "start failed at step 'vllm-ready'" in err and "node2" in err
    assert f"node1: removed dgxc-{tb.name}-head" in err
    assert re.search(rf"node2: could not roll back .*left behind: dgxc-{tb.name}-worker", err), err
    assert leftovers(tb)["node1"] == []
    ok = tb.dgx("start", *NATIVE, env=ENV)  # replaces what the cut left behind
    assert ok.returncode == 0, ok.stderr
    assert tb.dgx("stop", env=ENV).returncode == 0
    assert leftovers(tb) == {"node1": [], "node2": []}
    assert_no_leaks(tb, wait_s=90)  # sshd sessions of the cut connections end on their own


def test_a_head_behind_a_jump_host_is_started_and_served_through_its_ssh_connection(
        tb: Testbed, tmp_path: Path) -> None:
    """Issue 12: node1 (the head) reachable only through node2 (`nodes[].jump`, the head
    isolated from this machine): start's readiness check, status and smoke reach vLLM
    through the head's SSH connection, which itself goes through the checked jump host."""
    doc = tb.portable_doc()
    for n in doc["nodes"]:
        if n["name"] == "node1":
            n["jump"] = "node2"
    inv = tmp_path / "inv.yaml"
    inv.write_text(yaml.safe_dump(doc))
    env = {**ENV, "DGXCLUSTER_SSH__CONNECT_TIMEOUT": "4"}
    tb.tb("isolate", "node1")
    try:
        r = run_cli("-i", str(inv), "start", *NATIVE, env=env)
        assert r.returncode == 0, r.stderr
        st = run_cli("-i", str(inv), "status", "--json", env=env)
        assert st.returncode == 0, st.stderr
        vllm = json.loads(st.stdout)["vllm"]
        assert (vllm["state"], vllm["via"]) == ("ready", "ssh"), vllm
        smoke = run_cli("-i", str(inv), "smoke", "--max-tokens", "8", "--json", env=env)
        assert smoke.returncode == 0, smoke.stdout + smoke.stderr
        assert json.loads(smoke.stdout)["endpoint"]["via"] == "ssh"
        stop = run_cli("-i", str(inv), "stop", env=env)
        assert stop.returncode == 0, stop.stderr
    finally:
        tb.tb("unisolate", "node1")
    assert leftovers(tb) == {"node1": [], "node2": []}
    assert_no_leaks(tb)
