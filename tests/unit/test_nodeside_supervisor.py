"""The head's watcher (`nodeside/supervisor.py`): health is /health answering, restarts are
bounded (budget per window, backoff doubling), only after vLLM was healthy, recorded; when
the budget is spent it gives up, stopping what it watches. Run here with a fake node (docker
and /health answered from a script, time virtual); the e2e tests run it on the testbed."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

import pytest

from dgxcluster.core.nodepaths import NodePaths
from dgxcluster.inventory import parse_inventory
from dgxcluster.nodeside.supervisor import Supervisor
from dgxcluster.serving import supervise


class Node:
    """The head node as the watcher sees it: containers, vLLM's files, /health, a clock."""

    def __init__(self, tmp: Path) -> None:
        self.now = 1000.0
        self.healthy = True
        self.container = "running"
        self.calls: list[list[str]] = []
        self.tmp = tmp
        self.exit_file = tmp / "vllm.exit"
        self.on_relaunch: Any = None
        self.records_at_stop: str | None = None
        (tmp / "vllm.log").write_text("".join(f"line {i}\n" for i in range(50)))

    def run(self, argv: list[str]) -> tuple[int, str]:
        self.calls.append(argv)
        if argv[:2] == ["docker", "inspect"]:
            return 0, f"{self.container} 0\n"
        if argv[:2] in (["docker", "start"], ["docker", "restart"]):
            self.container = "running"
        if argv[:2] == ["docker", "stop"]:
            self.container = "exited"
            self.records_at_stop = (self.tmp / "restarts.jsonl").read_text() \
                if (self.tmp / "restarts.jsonl").exists() else ""
        if argv == ["relaunch"]:
            assert not self.exit_file.exists()  # never a stale exit status after a relaunch
            if self.on_relaunch:
                self.on_relaunch()
        if argv == ["kill"]:
            self.exit_file.write_text("137\n")
        return 0, ""

    def get(self, _url: str, _timeout: float) -> bool:
        return self.healthy

    def sleep(self, s: float) -> None:
        self.now += s

    def clock(self) -> float:
        return self.now


def cfg(tmp: Path, **over: Any) -> dict[str, Any]:
    base = {"health_url": "http://127.0.0.1:8000/health", "containers": ["dgxc-c-head"],
            "exit_file": str(tmp / "vllm.exit"), "log": str(tmp / "vllm.log"),
            "relaunch": ["relaunch"], "kill": ["kill"], "records": str(tmp / "restarts.jsonl"),
            "state": str(tmp / "supervisor.json"), "max_restarts": 3, "window_s": 600,
            "backoff_s": 5, "backoff_max_s": 300, "interval_s": 5, "failed_probes": 3,
            "probe_timeout_s": 5, "ready_timeout_s": 60, "config": "abc"}
    return {**base, **over}


def sup(tmp: Path, node: Node, **over: Any) -> Supervisor:
    return Supervisor(cfg(tmp, **over), clock=node.clock, sleep=node.sleep, run=node.run, get=node.get)


def records(tmp: Path) -> list[dict[str, Any]]:
    path = tmp / "restarts.jsonl"
    return [json.loads(ln) for ln in path.read_text().splitlines()] if path.exists() else []


def state(tmp: Path) -> dict[str, Any]:
    return json.loads((tmp / "supervisor.json").read_text())  # type: ignore[no-any-return]


def test_a_vllm_that_exits_is_relaunched_once_and_recorded(tmp_path: Path) -> None:
    node = Node(tmp_path)
    s = sup(tmp_path, node)
    s.loop(rounds=2)
    assert state(tmp_path)["state"] == "watching" and records(tmp_path) == []
    node.exit_file.write_text("137\n")
    s.loop(rounds=3)
    [r] = records(tmp_path)
    assert (r["what"], r["why"], r["exit"], r["action"], r["attempt"]) == (
        "vllm", "vLLM exited with status 137", 137, "restart", 1)
    assert r["tail"][-1] == "line 49" and len(r["tail"]) == 20 and r["backoff_s"] == 5
    assert ["relaunch"] in node.calls and not any(c[:2] == ["docker", "start"] for c in node.calls)
    st = state(tmp_path)
    assert (st["state"], st["restarts"], st["last"]["what"]) == ("watching", 1, "vllm")


def test_a_hang_counts_after_the_configured_failed_probes_and_is_killed_first(tmp_path: Path) -> None:
    node = Node(tmp_path)
    s = sup(tmp_path, node)
    s.loop(rounds=1)
    node.healthy = False
    s.loop(rounds=2)
    assert records(tmp_path) == []  # two failed probes: not yet
    node.on_relaunch = lambda: setattr(node, "healthy", True)
    s.loop(rounds=2)
    [r] = records(tmp_path)
    assert r["why"].startswith("vLLM stopped answering http://127.0.0.1:8000/health (3 probes")
    assert r["exit"] is None
    assert node.calls.index(["kill"]) < node.calls.index(["relaunch"])


def test_nothing_is_done_before_vllm_was_healthy(tmp_path: Path) -> None:
    node = Node(tmp_path)
    node.healthy = False
    node.exit_file.write_text("1\n")
    sup(tmp_path, node).loop(rounds=10)
    assert records(tmp_path) == [] and ["relaunch"] not in node.calls


def test_a_crash_loop_backs_off_then_gives_up_leaving_the_cluster_stopped(tmp_path: Path) -> None:
    node = Node(tmp_path)
    s = sup(tmp_path, node)
    s.loop(rounds=1)
    node.healthy = False
    node.on_relaunch = lambda: node.exit_file.write_text("1\n")  # dies at once, every time
    node.exit_file.write_text("1\n")
    assert s.loop(rounds=50) == 0
    rs = records(tmp_path)
    assert [r["action"] for r in rs] == ["restart", "restart", "restart", "gave up"]
    assert [r.get("backoff_s") for r in rs[:3]] == [5, 10, 20]
    assert "before it was healthy again" in rs[1]["why"]
    assert rs[-1]["why"].endswith("gave up after 3 restart(s) within 600s, cluster left stopped")
    assert ["docker", "stop", "-t", "10", "dgxc-c-head"] in node.calls
    # "left stopped" is written once it is true: whoever reads it finds the containers stopped
    assert node.records_at_stop is not None and "gave up" not in node.records_at_stop
    st = state(tmp_path)
    assert (st["state"], st["restarts"]) == ("gave up", 3) and "gave up" in st["last"]["why"]


def test_the_budget_is_per_window(tmp_path: Path) -> None:
    node = Node(tmp_path)
    s = sup(tmp_path, node, max_restarts=1, window_s=60)
    s.loop(rounds=1)
    node.exit_file.write_text("137\n")
    s.loop(rounds=2)
    node.now += 120  # the window has passed: one more is allowed
    node.exit_file.write_text("137\n")
    s.loop(rounds=2)
    assert [r["action"] for r in records(tmp_path)] == ["restart", "restart"]
    node.exit_file.write_text("137\n")
    s.loop(rounds=2)
    assert [r["action"] for r in records(tmp_path)][-1] == "gave up"


def test_a_stopped_container_is_started_again(tmp_path: Path) -> None:
    node = Node(tmp_path)
    s = sup(tmp_path, node)
    s.loop(rounds=1)
    node.container = "exited"
    s.loop(rounds=1)
    assert ["docker", "start", "dgxc-c-head"] in node.calls
    assert records(tmp_path)[0]["what"] == "container dgxc-c-head"


def test_the_config_start_writes_names_the_head_its_files_and_the_launcher() -> None:
    inv = parse_inventory(
        "cluster: c\nnodes:\n  - {name: a, host: 10.0.0.1, fabric_ip: 192.0.2.1}\n"
        "  - {name: b, host: 10.0.0.2, fabric_ip: 192.0.2.2}\n"
        "serve: {model: m, restart: on-failure, max_restarts: 2, health_failures: 4}\n",
        environ={})
    paths = NodePaths(home="/root", state_dir="~/.local/state/dgxcluster", cluster="c")
    c = supervise.config(inv, paths, "cafe")
    assert c["health_url"] == "http://127.0.0.1:8000/health"
    assert c["containers"] == ["dgxc-c-head"]
    assert c["exit_file"] == "/root/.local/state/dgxcluster/c/logs/vllm.exit"
    assert c["relaunch"][:4] == ["docker", "exec", "-d", "dgxc-c-head"]
    assert (c["max_restarts"], c["failed_probes"]) == (2, 4)
    assert json.loads(supervise.render(c)) == c


NATIVE3 = ("cluster: c\nnodes:\n  - {name: a, host: 10.0.0.1, fabric_ip: 192.0.2.1}\n"
           "  - {name: b, host: 10.0.0.2, fabric_ip: 192.0.2.2}\n"
           "  - {name: d, host: 10.0.0.3, fabric_ip: 192.0.2.3}\n"
           "serve: {model: m, executor: native, restart: on-failure, port: 8123,\n"
           "        tensor_parallel_size: 3}\n")


@pytest.mark.parametrize("n", [2, 3])
def test_native_every_rank_has_its_own_watcher_over_its_own_container(n: int) -> None:
    """Rank 0 watches its /health on loopback; a headless rank the head's /health at the
    head's fabric address (vLLM listens on every interface); none relaunches or kills: the
    container's main process is the rank, so restarting the container is the relaunch."""
    text = NATIVE3 if n == 3 else NATIVE3.replace("  - {name: d, host: 10.0.0.3, fabric_ip: "
                                                  "192.0.2.3}\n", "").replace("size: 3", "size: 2")
    inv = parse_inventory(text, environ={})
    paths = NodePaths(home="/home/u", state_dir="~/.local/state/dgxcluster", cluster="c")
    assert supervise.watcher_nodes(inv) == ["a", "b", "d"][:n]
    head = supervise.config(inv, paths, "cafe", "a")
    assert head == supervise.config(inv, paths, "cafe")  # the head's is the default
    assert head["health_url"] == "http://127.0.0.1:8123/health"
    assert head["containers"] == ["dgxc-c-head"]
    assert "relaunch" not in head and "kill" not in head
    for node in ["b", "d"][:n - 1]:
        c = supervise.config(inv, paths, "cafe", node)
        assert c["health_url"] == "http://192.0.2.1:8123/health"
        assert c["containers"] == ["dgxc-c-worker"]
        assert "relaunch" not in c and "kill" not in c
        # its own files on its own node, its own budget: twice rank 0's, as it follows rank 0
        assert c["exit_file"] == "/home/u/.local/state/dgxcluster/c/logs/vllm.exit"
        assert c["records"] == "/home/u/.local/state/dgxcluster/c/logs/restarts.jsonl"
        assert c["max_restarts"] == 2 * inv.serve.max_restarts == 2 * head["max_restarts"]


def test_ray_has_a_watcher_per_node_only_the_heads_over_vllm_and_a_pinned_host_is_asked(
        ) -> None:
    inv = parse_inventory(NATIVE3.replace("executor: native", "executor: ray"), environ={})
    assert supervise.watcher_nodes(inv) == ["a", "b", "d"]
    paths0 = NodePaths(home="/root", state_dir="~/.local/state/dgxcluster", cluster="c")
    head, worker = (supervise.config(inv, paths0, "x", n) for n in ("a", "b"))
    assert head["health_url"] and head["relaunch"] and head["containers"] == ["dgxc-c-head"]
    assert worker["containers"] == ["dgxc-c-worker"]
    assert head["max_restarts"] == worker["max_restarts"] == inv.serve.max_restarts  # its own
    assert not {"health_url", "relaunch", "kill", "exit_file", "log"} & set(worker), worker
    pinned = parse_inventory(NATIVE3.replace("port: 8123", "port: 8123, host: 192.0.2.1"),
                             environ={})
    paths = NodePaths(home="/root", state_dir="~/.local/state/dgxcluster", cluster="c")
    assert supervise.config(pinned, paths, "x", "b")["health_url"] == "http://192.0.2.1:8123/health"
    assert supervise.config(pinned, paths, "x", "a")["health_url"] == "http://192.0.2.1:8123/health"


def test_a_container_only_watcher_starts_its_dead_container_again_and_records_its_log(
        tmp_path: Path) -> None:
    """A Ray worker's: no /health to ask (never called), no vLLM files; the record's tail is
    the container's own log."""
    node = Node(tmp_path)
    asked: list[str] = []
    node.get = lambda url, _t: asked.append(url) or True  # type: ignore[method-assign]
    c = cfg(tmp_path, containers=["dgxc-c-worker"])
    for key in ("health_url", "relaunch", "kill", "exit_file", "log"):
        del c[key]
    s = Supervisor(c, clock=node.clock, sleep=node.sleep, run=node.run, get=node.get)
    s.loop(rounds=2)
    assert records(tmp_path) == []
    node.container = "exited"
    s.loop(rounds=1)
    rec = records(tmp_path)
    assert [(r["what"], r["why"], r["action"]) for r in rec] == [
        ("container dgxc-c-worker", "container exited (exit 0)", "restart")]
    assert ["docker", "start", "dgxc-c-worker"] in node.calls
    assert any(call[:2] == ["sh", "-c"] and "docker logs --tail" in call[2] for call in node.calls)
    assert asked == [] and state(tmp_path)["state"] == "starting"
    s.loop(rounds=1)
    assert state(tmp_path)["state"] == "watching"
    for _ in range(3):  # it keeps dying: the budget (3 per window) is spent, then it gives up
        node.container = "exited"
        s.loop(rounds=2)
    rec = records(tmp_path)
    assert [r["action"] for r in rec] == ["restart"] * 3 + ["gave up"], rec
    assert rec[-1]["why"].endswith("gave up after 3 restart(s) within 600s, dgxc-c-worker left "
                                   "stopped"), rec[-1]
    assert ["docker", "stop", "-t", "10", "dgxc-c-worker"] in node.calls


def test_without_relaunch_an_exited_rank_restarts_its_container_naming_vllms_exit(
        tmp_path: Path) -> None:
    node = Node(tmp_path)
    s = sup(tmp_path, node, relaunch=None, kill=None)
    del s.cfg["relaunch"], s.cfg["kill"]
    s.loop(rounds=1)
    node.container = "exited"  # the launcher, its main process, ended with vLLM
    node.exit_file.write_text("137\n")
    s.loop(rounds=1)
    rec = records(tmp_path)
    assert [(r["what"], r["why"], r["exit"]) for r in rec] == [
        ("vllm", "vLLM exited with status 137", 137)]
    assert ["docker", "start", "dgxc-c-head"] in node.calls
    assert not node.exit_file.exists()  # no stale exit status for the restarted rank to trip on
    assert not any(c in (["relaunch"], ["kill"]) for c in node.calls)


def test_without_relaunch_a_hang_restarts_the_running_container(tmp_path: Path) -> None:
    node = Node(tmp_path)
    s = sup(tmp_path, node)
    del s.cfg["relaunch"], s.cfg["kill"]
    s.loop(rounds=1)
    node.healthy = False  # e.g. a headless rank's cluster stopped answering, its process lives
    s.loop(rounds=3)
    assert ["docker", "restart", "dgxc-c-head"] in node.calls
    assert "3 probes in a row" in records(tmp_path)[0]["why"]


def test_the_launch_and_stop_scripts_start_it_detached_and_end_exactly_it(tmp_path: Path) -> None:
    """The node-side scripts themselves, here: the pid file names the watcher (not a shell),
    `stop` ends it and says so, a second `stop` finds nothing."""
    import subprocess

    from dgxcluster.core import ship

    pyz = tmp_path / "nodeside.pyz"
    pyz.write_bytes(ship.bundle())
    node = Node(tmp_path)
    c = cfg(tmp_path, health_url="http://127.0.0.1:9/health", containers=[], interval_s=0.2)
    (tmp_path / "c.json").write_text(json.dumps(c))
    pid_file = tmp_path / "supervisor.pid"
    out = subprocess.run(["sh", "-c", supervise._LAUNCH, "sh", str(tmp_path / "c.json"), str(pyz),
                          str(tmp_path / "supervisor.log"), str(pid_file)],
                         capture_output=True, text=True, check=True, timeout=30).stdout
    assert "started" in out
    pid = int(pid_file.read_text())
    try:
        _launched_then_stopped(tmp_path, pid, pid_file, pyz)
    finally:  # never leave a watcher behind, whatever failed
        with contextlib.suppress(OSError):
            os.killpg(pid, 9)
    assert node.calls == []


def _launched_then_stopped(tmp_path: Path, pid: int, pid_file: Path, pyz: Path) -> None:
    import subprocess
    import time

    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    # `python3` itself, or a wrapper script running it (`bash .../python3 ARGS`)
    assert cmdline[-4:-1] == [str(pyz).encode(), b"supervisor", str(tmp_path / "c.json").encode()]
    assert os.getsid(pid) == pid  # its own session: the SSH channel's end does not reach it
    group = [p for p in os.listdir("/proc") if p.isdigit() and _pgid(int(p)) == pid]
    for _ in range(50):
        if (tmp_path / "supervisor.json").exists():
            break
        time.sleep(0.1)
    assert json.loads((tmp_path / "supervisor.json").read_text())["state"] == "watching"
    stop = ["sh", "-c", supervise._STOP, "sh", str(pid_file)]
    assert subprocess.run(stop, capture_output=True, text=True, timeout=30).stdout.strip() == "stopped"
    time.sleep(0.5)
    assert [p for p in group if _pgid(int(p)) == pid] == []  # the whole group is gone
    assert subprocess.run(stop, capture_output=True, text=True, timeout=30).stdout.strip() == "absent"
    assert json.loads((tmp_path / "supervisor.json").read_text())["state"] == "stopped"


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except OSError:
        return None
