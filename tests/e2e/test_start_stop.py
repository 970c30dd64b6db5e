"""`dgxcluster start` / `stop` on the 2-node docker testbed: real sshd, dockerd and Ray; the
vLLM stand-in is the only double. Each test leaves the testbed with nothing running.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.children import spawn
from tests.conftest import REPO, Testbed, flat, run_cli
from tests.leaks import assert_no_leaks

pytestmark = [pytest.mark.e2e, pytest.mark.docker]

TOKEN = f"hf_e2e{uuid.uuid4().hex}"
ENV = {"HF_TOKEN": TOKEN}
STATE = "/root/.local/state/dgxcluster"


@pytest.fixture(scope="module")
def tb(testbed_docker: Testbed) -> Iterator[Testbed]:
    testbed_docker.ensure_image()
    testbed_docker.ensure_model()
    yield testbed_docker
    testbed_docker.dgx("stop", env=ENV)


@pytest.fixture
def clean(tb: Testbed) -> Iterator[Testbed]:
    """Nothing of this cluster before the test; nothing after, faults undone."""
    assert tb.dgx("stop", env=ENV).returncode == 0
    yield tb
    tb.tb("heal", "node2", check=False)
    tb.dgx("stop", env=ENV)


def containers(tb: Testbed, node: str) -> list[str]:
    out = tb.node_exec(node, "docker", "ps", "-a", "--filter", f"label=dgxcluster.cluster={tb.name}",
                       "--format", "{{.Names}} {{.ID}} {{.Label \"dgxcluster.config\"}}").stdout
    return sorted(out.split("\n")[:-1])


def env_files(tb: Testbed, node: str) -> list[str]:
    out = tb.node_exec(node, "sh", "-c", f"ls {STATE}/{tb.name}/env 2>/dev/null; true").stdout
    return out.split()


def leftovers(tb: Testbed) -> dict[str, list[str]]:
    return {n: containers(tb, n) + env_files(tb, n) for n in tb.nodes}


def popen_start(tb: Testbed, env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("DGXCLUSTER_")}
    full.update(env)
    return spawn([sys.executable, "-m", "dgxcluster", "-i", str(tb.inventory), "start", *args],
                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=full,
                 cwd=str(REPO))


class CmdlineSampler(threading.Thread):
    """Reads every process's command line on the host (the nodes share its PID namespace)."""

    def __init__(self, needle: str) -> None:
        super().__init__(daemon=True)
        self.needle = needle.encode()
        self.sweeps = 0
        self.processes: set[int] = set()
        self.hits: list[str] = []
        self.saw_ray = False  # proof that the nodes' (containers') processes were sampled
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            for entry in Path("/proc").iterdir():
                if not entry.name.isdigit():
                    continue
                try:
                    cmd = (entry / "cmdline").read_bytes()
                except OSError:
                    continue
                self.processes.add(int(entry.name))
                self.saw_ray = self.saw_ray or b"raylet" in cmd
                if self.needle in cmd:
                    self.hits.append(cmd.replace(b"\0", b" ").decode(errors="replace"))
            self.sweeps += 1
            time.sleep(0.02)

    def stop(self) -> None:
        self._halt.set()
        self.join()


def endpoint_of(stdout: str) -> str:
    m = re.search(r"^endpoint: (\S+)", stdout, re.M)
    assert m, stdout
    return m.group(1)


def test_start_serves_then_start_again_changes_nothing_then_stop_removes_everything(
        clean: Testbed) -> None:
    tb = clean
    sampler = CmdlineSampler(TOKEN)
    sampler.start()
    r = tb.dgx("-v", "start", env=ENV)
    sampler.stop()
    assert r.returncode == 0, r.stderr
    # the token never appeared on any process's command line on any node, nor in our output
    assert sampler.hits == []
    assert sampler.saw_ray and sampler.sweeps > 20
    assert TOKEN not in r.stdout + r.stderr
    url = endpoint_of(r.stdout)
    chat = httpx.post(f"{url}/chat/completions", timeout=30, json={
        "model": "Qwen/Qwen3-0.6B", "messages": [{"role": "user", "content": "ping"}],
        "max_tokens": 32})
    assert chat.status_code == 200, chat.text
    body = chat.json()
    assert body["object"] == "chat.completion"
    assert "ping" in body["choices"][0]["message"]["content"]
    assert body["usage"]["completion_tokens"] > 0
    models = httpx.get(f"{url}/models", timeout=30).json()
    assert [(m["id"], m["owned_by"]) for m in models["data"]] == [("Qwen/Qwen3-0.6B", "vLLM stand-in")]
    # the secret went only into 0600 env-files
    for node, role in (("node1", "head"), ("node2", "worker")):
        path = f"{STATE}/{tb.name}/env/{role}.env"
        assert tb.node_exec(node, "stat", "-c", "%a", path).stdout.strip() == "600"
        assert f"HF_TOKEN={TOKEN}" in tb.node_exec(node, "cat", path).stdout
    before = leftovers(tb)

    again = tb.dgx("start", env=ENV)
    assert again.returncode == 0, again.stderr
    assert "already running" in again.stdout
    assert leftovers(tb) == before  # same containers (ids), nothing restarted

    changed = tb.dgx("start", env={**ENV, "DGXCLUSTER_SERVE__MAX_MODEL_LEN": "2048"})
    assert changed.returncode == 1
    assert "different configuration is running" in changed.stderr and "--restart" in changed.stderr
    assert leftovers(tb) == before

    dry = tb.dgx("start", "--dry-run", env=ENV)
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.count("docker run -d --name dgxc-") == 2
    assert "HF_TOKEN=******" in dry.stdout and TOKEN not in dry.stdout + dry.stderr

    stop = tb.dgx("stop", env=ENV)
    assert stop.returncode == 0, stop.stderr
    assert leftovers(tb) == {"node1": [], "node2": []}
    log = tb.node_exec("node1", "cat", f"{STATE}/{tb.name}/logs/vllm.log").stdout
    assert "Application shutdown complete" in log  # vLLM was stopped gracefully
    assert TOKEN not in log
    again_stop = tb.dgx("stop", env=ENV)
    assert again_stop.returncode == 0 and "nothing to stop" in again_stop.stdout


def test_worker_cut_off_during_start_fails_naming_it_and_leaves_nothing(clean: Testbed) -> None:
    tb = clean
    proc = popen_start(tb, ENV)
    assert proc.stderr is not None
    err: list[str] = []
    cut = False
    for line in proc.stderr:
        err.append(line)
        if not cut and line.startswith("node1: ray-head: waiting"):
            tb.tb("cut", "node2")
            cut = True
    out = proc.stdout.read() if proc.stdout else ""
    rc = proc.wait(timeout=600)
    text = "".join(err)
    assert cut, text
    assert rc == 3, text
    assert "start failed at step 'ray-workers'" in text and "node2: unreachable" in text
    assert "rolled back" in text and "node1: removed dgxc-" in text
    assert "ray-workers" in out
    tb.tb("heal", "node2")
    assert leftovers(tb) == {"node1": [], "node2": []}
    assert_no_leaks(tb, wait_s=90)  # sshd sessions of the cut connection end on their own


def test_standin_killed_while_loading_fails_fast_with_its_log(clean: Testbed) -> None:
    tb = clean
    log = f"{STATE}/{tb.name}/logs/vllm.log"
    tb.node_exec("node1", "rm", "-f", log)  # an older run's log must not be mistaken for this one
    env = {**ENV, "DGXCLUSTER_CONTAINER__ENV": json.dumps({"DGXCLUSTER_STANDIN_LOAD_S": "600"})}
    proc = popen_start(tb, env)
    pid = None
    try:
        while proc.poll() is None and pid is None:
            text = tb.node_exec("node1", "sh", "-c", f"cat {log} 2>/dev/null; true").stdout
            if "Starting to load model" in text:
                ps = tb.tb("ps", "node1").stdout.splitlines()
                pid = next(int(ln.split()[0]) for ln in ps if "python" in ln and "vllm serve" in ln)
                os.kill(pid, signal.SIGKILL)
            time.sleep(0.5)
        _out, err = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)  # roll back what it started
            proc.communicate(timeout=120)
    assert pid is not None, err
    assert proc.returncode == 1, err
    assert "start failed at step 'vllm-ready'" in err
    assert "vLLM exited with status 137" in err  # seen by the launcher, not a timeout
    assert "vLLM stand-in" in err and "Starting to load model" in err  # its log tail
    assert leftovers(tb) == {"node1": [], "node2": []}
    assert_no_leaks(tb)


def test_restart_replaces_a_different_config_and_stop_cleans_reachable_nodes(clean: Testbed) -> None:
    tb = clean
    assert tb.dgx("start", env=ENV).returncode == 0
    renamed = {**ENV, "DGXCLUSTER_SERVE__SERVED_MODEL_NAME": "standin-renamed"}
    r = tb.dgx("start", "--restart", env=renamed)
    assert r.returncode == 0, r.stderr
    models = httpx.get(f"{endpoint_of(r.stdout)}/models", timeout=30).json()
    assert [m["id"] for m in models["data"]] == ["standin-renamed"]
    tb.tb("cut", "node2")
    stop = tb.dgx("stop", env=ENV)
    assert stop.returncode == 3, stop.stderr
    assert "node2" in stop.stderr and "unreachable" in stop.stderr
    assert containers(tb, "node1") == [] and env_files(tb, "node1") == []
    tb.tb("heal", "node2")
    assert containers(tb, "node2") != []  # it could not be reached; now it can
    again = tb.dgx("stop", env=ENV)
    assert again.returncode == 0, again.stderr
    assert leftovers(tb) == {"node1": [], "node2": []}


HOLD = """
import sys, time
from dgxcluster.inventory import load_inventory
from dgxcluster.serving.lock import ClusterLock
from dgxcluster.core.session import Session
inv = load_inventory(sys.argv[1])
with Session.open(inv, command="test") as s:
    conn = s.cluster.conn(inv.head_name)
    with ClusterLock(conn, inv.state_dir, inv.cluster, "test-holder"):
        print("LOCKED", flush=True)
        time.sleep(600)
"""


def test_lock_refuses_a_second_run_naming_the_holder_and_dies_with_it(clean: Testbed) -> None:
    tb = clean
    holder = spawn([sys.executable, "-c", HOLD, str(tb.inventory)], stdout=subprocess.PIPE,
                   text=True, cwd=str(REPO))
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "LOCKED"
        for cmd in ("start", "stop"):
            r = tb.dgx(cmd, env=ENV)
            assert r.returncode == 1, r.stderr
            assert "held by dgxcluster test-holder" in r.stderr and f"pid {holder.pid}" in r.stderr
    finally:
        holder.kill()  # SIGKILL: no cleanup code runs in the holder
        holder.wait()
    r = tb.dgx("stop", env=ENV)
    assert r.returncode == 0, r.stderr
    assert "nothing to stop" in r.stdout


WIDE = {**ENV, "COLUMNS": "300"}  # one table row per line


def test_model_missing_on_a_worker_refuses_naming_it_until_synced(clean: Testbed) -> None:
    """Preflight looks in every node's HF cache: a worker without the model stops start
    before anything runs; --skip-model-check overrides; `model sync` fixes it."""
    tb = clean
    folder = "/root/.cache/huggingface/hub/models--Qwen--Qwen3-0.6B"
    tb.node_exec("node2", "rm", "-rf", folder)
    try:
        r = tb.dgx("start", env=ENV)
        assert r.returncode == 1, r.stderr
        assert "start failed at step 'preflight'" in r.stderr
        assert ("node2: step 'preflight' failed: model Qwen/Qwen3-0.6B (main) is not complete "
                "here: not in this node's cache") in r.stderr
        assert "dgxcluster model sync Qwen/Qwen3-0.6B" in r.stderr
        assert "node1: model" not in r.stderr and "Traceback" not in r.stderr
        assert "nothing was changed" in r.stderr
        assert leftovers(tb) == {"node1": [], "node2": []}
        skipped = tb.dgx("start", "--skip-model-check", env=WIDE)
        assert skipped.returncode == 0, skipped.stderr
        assert "model check off (--skip-model-check)" in flat(skipped.stdout)
        assert tb.dgx("stop", env=ENV).returncode == 0
    finally:
        tb.ensure_model()
    r = tb.dgx("start", env=WIDE)
    assert r.returncode == 0, r.stderr
    assert re.search(r"model Qwen/Qwen3-0\.6B complete \([0-9a-f]{12}, 3 files\)", flat(r.stdout)), \
        r.stdout


def test_an_ipv6_head_is_served_and_reached_by_status_and_smoke(clean: Testbed) -> None:
    """A head whose `host:` is an IPv6 address used to end `start` in a traceback (httpx's
    InvalidURL on `http://fd00::1:8000`). The testbed's management ports are dual-stack:
    here SSH, the readiness probe, status and smoke all go over IPv6."""
    tb = clean
    node1 = next(n for n in tb.status()["nodes"] if n["node"] == "node1")  # type: ignore[union-attr]
    v6 = tb.inventory.with_name(f"{tb.inventory.stem}-v6.yaml")  # beside it: relative paths hold
    v6.write_text(tb.inventory.read_text().replace(f"host: {node1['mgmt_ip']}\n",
                                                   f"host: '{node1['mgmt_ip6']}'\n"))
    try:
        r = run_cli("-i", str(v6), "start", env=ENV)
        assert "Traceback" not in r.stderr, r.stderr
        assert r.returncode == 0, r.stderr
        url = endpoint_of(r.stdout)
        assert url == f"http://[{node1['mgmt_ip6']}]:8000/v1"
        assert f"curl -s -g '{url}/chat/completions'" in r.stdout
        models = httpx.get(f"{url}/models", timeout=30).json()
        assert [m["id"] for m in models["data"]] == ["Qwen/Qwen3-0.6B"]
        log = tb.node_exec("node1", "cat", f"{STATE}/{tb.name}/logs/vllm.log").stdout
        assert "Starting vLLM API server 0 on http://[::]:8000" in log  # --host :: (IPv4 too)
        status = run_cli("-i", str(v6), "status", "--json", env=ENV)
        assert status.returncode == 0, status.stderr
        assert json.loads(status.stdout)["vllm"]["state"] == "ready"
        smoke = run_cli("-i", str(v6), "smoke", "--json", env=ENV)
        assert smoke.returncode == 0, smoke.stderr
        assert json.loads(smoke.stdout)["endpoint"]["endpoint"] == url
        stop = run_cli("-i", str(v6), "stop", env=ENV)
        assert stop.returncode == 0, stop.stderr
        assert leftovers(tb) == {"node1": [], "node2": []}
    finally:
        v6.unlink()
