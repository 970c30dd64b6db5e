"""`start --persist` (issue 17, item 2): back after a reboot, end to end on the docker testbed.

A reboot is `scripts/testbed reboot`: every process of the node SIGKILLed at once (its
containers included, as a power cut), dockerd and sshd started again, files kept, then the
units enabled in the node's multi-user.target.wants run (the systemctl double's boot). The
units and boot plans are dgxcluster's own (`serving/persist.py`, `nodeside/boot.py`).
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import Testbed, flat
from tests.e2e.test_start_stop import STATE, endpoint_of, leftovers
from tests.leaks import assert_no_leaks

pytestmark = [pytest.mark.e2e, pytest.mark.docker]

ENV = {"DGXCLUSTER_CONTAINER__ENV": json.dumps({"DGXCLUSTER_STANDIN_LOAD_S": "0"}),
       "COLUMNS": "300"}
UNITS = "/etc/systemd/system"
BACK_S = 420.0  # a loaded 2-core machine: two dockerds, Ray and the stand-in from cold


@pytest.fixture(scope="module")
def tb(testbed_docker: Testbed) -> Iterator[Testbed]:
    testbed_docker.ensure_image()
    testbed_docker.ensure_model()
    testbed_docker.dgx("stop", env=ENV)
    yield testbed_docker
    testbed_docker.dgx("stop", env=ENV)


def unit(tb: Testbed) -> str:
    return f"dgxcluster-{tb.name}.service"


def reboot_all(tb: Testbed) -> subprocess.CompletedProcess[str]:
    """`scripts/testbed reboot` on every node; its own words when it fails."""
    r = tb.tb("reboot", *tb.nodes, check=False)
    assert r.returncode == 0, f"testbed reboot failed ({r.returncode}):\n{r.stdout}\n{r.stderr}"
    return r


def units_on(tb: Testbed, node: str) -> list[str]:
    out = tb.node_exec(node, "sh", "-c", f"cd {UNITS} && ls -1 *.service */*.service "
                       f"{STATE}/{tb.name}/boot-plan.json 2>/dev/null; true").stdout
    return sorted(ln for ln in out.split() if ln)


def status(tb: Testbed, env: dict[str, str]) -> dict[str, object]:
    r = tb.dgx("status", "--json", env=env)
    assert r.stdout.strip(), r.stderr
    doc = json.loads(r.stdout)
    assert isinstance(doc, dict)
    return doc


def wait_serving(tb: Testbed, env: dict[str, str]) -> tuple[dict[str, object], float]:
    t0 = time.monotonic()
    while True:
        st = status(tb, env)
        vllm = st["vllm"]
        assert isinstance(vllm, dict)
        if vllm["state"] == "ready":
            return st, time.monotonic() - t0
        if time.monotonic() - t0 > BACK_S:
            boot = {n: tb.node_exec(n, "sh", "-c", f"cat {STATE}/{tb.name}/logs/boot.log; true")
                    .stdout for n in tb.nodes}
            pytest.fail(f"not serving {BACK_S:g}s after the reboot: {vllm}\nboot logs: {boot}")
        time.sleep(3)


def chat(url: str) -> None:
    r = httpx.post(f"{url}/chat/completions", timeout=60, json={
        "model": "Qwen/Qwen3-0.6B", "messages": [{"role": "user", "content": "ping"}],
        "max_tokens": 8})
    assert r.status_code == 200, r.text


def running(tb: Testbed) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for n in tb.nodes:
        ps = tb.node_exec(n, "docker", "ps", "--filter", f"label=dgxcluster.cluster={tb.name}",
                          "--format", "{{.Names}}").stdout.split()
        out[n] = ps
    return out


@pytest.mark.parametrize("executor", ["ray", "native"])
def test_persist_reboot_serves_again_then_stop_removes_it_and_a_reboot_starts_nothing(
        tb: Testbed, executor: str) -> None:
    env = {**ENV, "DGXCLUSTER_SERVE__EXECUTOR": executor}
    r = tb.dgx("start", "--persist", env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    url = endpoint_of(r.stdout)
    out = flat(r.stdout)
    for node in tb.nodes:
        assert f"{node} persist changed installed and enabled {unit(tb)}" in out, out
        assert units_on(tb, node) == [f"{STATE}/{tb.name}/boot-plan.json", unit(tb),
                                      f"multi-user.target.wants/{unit(tb)}"]
    st = status(tb, env)
    assert st["persist"] == {"state": "installed (matches running config)",
                             "nodes": dict.fromkeys(tb.nodes,
                                                    "installed (matches running config)")}
    again = tb.dgx("start", "--persist", env=env)
    assert again.returncode == 0 and "already running" in again.stdout, again.stderr
    for node in tb.nodes:
        assert f"{node} persist unchanged {unit(tb)} enabled" in flat(again.stdout)
    # the watcher is not asked for; the dry run shows the unit and the plan, no secrets
    dry = tb.dgx("start", "--persist", "--dry-run", env={**env, "HF_TOKEN": "hf_persistsecret"})
    assert dry.returncode == 0 and "Type=oneshot" in dry.stdout and '"steps"' in dry.stdout
    assert "hf_persistsecret" not in dry.stdout + dry.stderr

    reboot = reboot_all(tb)
    for node in tb.nodes:
        assert f"{node}: rebooted" in reboot.stdout and unit(tb) in reboot.stdout, reboot.stdout
    st, took = wait_serving(tb, env)
    print(f"{executor}: serving again {took:.1f}s after the reboot")
    chat(url)
    for node in tb.nodes:
        log = tb.node_exec(node, "cat", f"{STATE}/{tb.name}/logs/boot.log").stdout
        assert "boot: done" in log and "FAILED" not in log, log
    assert st["executor"] == executor
    assert st["persist"]["state"] == "installed (matches running config)"  # type: ignore[index]

    stop = tb.dgx("stop", env=env)
    assert stop.returncode == 0, stop.stderr
    assert f"persist changed disabled and removed {unit(tb)}" in flat(stop.stdout)
    assert {n: units_on(tb, n) for n in tb.nodes} == {n: [] for n in tb.nodes}
    reboot_all(tb)
    time.sleep(5)
    assert running(tb) == {n: [] for n in tb.nodes}
    assert leftovers(tb) == {"node1": [], "node2": []}
    assert_no_leaks(tb)


def test_without_persist_a_reboot_starts_nothing_and_status_says_so(tb: Testbed) -> None:
    r = tb.dgx("start", env=ENV)
    assert r.returncode == 0, r.stdout + r.stderr
    for node in tb.nodes:
        assert f"{node} persist unchanged off (no unit installed)" in flat(r.stdout)
    reboot = reboot_all(tb)
    assert "units started: none" in reboot.stdout
    time.sleep(10)
    assert running(tb) == {n: [] for n in tb.nodes}
    st = status(tb, ENV)
    assert st["vllm"]["state"] != "ready"  # type: ignore[index]
    assert st["persist"]["state"] == "off"  # type: ignore[index]
    shown = tb.dgx("status", env=ENV).stdout
    assert "persist off (a reboot starts nothing; `start --persist` installs it)" in flat(shown)
    assert tb.dgx("stop", env=ENV).returncode == 0
    assert_no_leaks(tb)
