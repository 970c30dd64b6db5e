"""`serve.persist`: the boot plan each node runs at boot (pure data made from start's own
functions), the systemd unit, what the node reports, and status's words for it."""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from dgxcluster.core.nodepaths import NodePaths
from dgxcluster.inventory import parse_inventory
from dgxcluster.serving import persist, plan, supervise
from dgxcluster.serving.vllm import clear_state_argv
from dgxcluster.status.probe import parse, persist_of
from dgxcluster.status.report import persist_line, persist_summary

NODES3 = """\
cluster: spark
nodes:
  - {name: spark1, host: spark1.local, fabric_ip: 192.168.100.10}
  - {name: spark2, host: spark2.local, fabric_ip: 192.168.100.11}
  - {name: spark3, host: spark3.local, fabric_ip: 192.168.100.12}
serve:
  model: Qwen/Qwen3-30B-A3B-FP8
"""
PATHS = NodePaths(home="/home/nvidia", state_dir="~/.local/state/dgxcluster", cluster="spark")
CONFIG = "cafecafecafecafe"


def inv(n: int = 2, executor: str = "ray", **serve: object):  # type: ignore[no-untyped-def]
    lines = NODES3.splitlines()
    text = "\n".join(ln for ln in lines if not any(f"spark{k}," in ln for k in range(n + 1, 4)))
    doc = parse_inventory(text + "\n")
    return doc.model_copy(update={"serve": doc.serve.model_copy(
        update={"executor": executor, **serve})})


def kinds(doc: dict[str, object]) -> list[str]:
    steps = doc["steps"]
    assert isinstance(steps, list)
    return [next(k for k in ("wait_tcp", "wait_run", "run") if k in s) for s in steps]


@pytest.mark.parametrize("n", [2, 3])
def test_ray_head_starts_ray_waits_for_every_node_then_launches_vllm_as_start_does(n: int) -> None:
    i = inv(n)
    doc = persist.boot_plan(i, "spark1", PATHS, CONFIG)
    assert doc["config"] == CONFIG and doc["role"] == "head" and doc["log"] == PATHS.boot_log
    assert kinds(doc) == ["run", "wait_tcp", "wait_run", "run", "run"]
    steps = doc["steps"]
    assert isinstance(steps, list)
    assert steps[0]["run"] == ["docker", "start", "dgxc-spark-head"]
    assert steps[1]["wait_tcp"] == ["192.168.100.10", 6379]
    assert steps[2]["wait_run"] == ["docker", "exec", "dgxc-spark-head", "ray", "status"]
    assert steps[2]["count"] == n
    assert steps[3]["run"] == clear_state_argv(PATHS)
    assert steps[4]["run"] == plan.serve_exec(i)  # the very argv start launches vLLM with


@pytest.mark.parametrize("n", [2, 3])
def test_ray_workers_wait_for_the_heads_gcs_then_start_their_container(n: int) -> None:
    i = inv(n)
    for node in [f"spark{k}" for k in range(2, n + 1)]:
        doc = persist.boot_plan(i, node, PATHS, CONFIG)
        steps = doc["steps"]
        assert isinstance(steps, list)
        assert kinds(doc) == ["wait_tcp", "run"]
        assert steps[0]["wait_tcp"] == ["192.168.100.10", 6379]
        assert steps[0]["timeout_s"] == i.ray.start_timeout_s
        assert steps[1]["run"] == ["docker", "start", "dgxc-spark-worker"]


@pytest.mark.parametrize("n", [2, 3])
def test_native_ranks_wait_for_rank0s_store_and_rank0_starts_at_once(n: int) -> None:
    i = inv(n, "native")
    head = persist.boot_plan(i, "spark1", PATHS, CONFIG)
    assert kinds(head) == ["run", "run"]
    assert head["steps"][0]["run"] == clear_state_argv(PATHS)  # type: ignore[index]
    assert head["steps"][1]["run"] == ["docker", "start", "dgxc-spark-head"]  # type: ignore[index]
    for node in [f"spark{k}" for k in range(2, n + 1)]:
        doc = persist.boot_plan(i, node, PATHS, CONFIG)
        steps = doc["steps"]
        assert isinstance(steps, list)
        assert kinds(doc) == ["wait_tcp", "run", "run"]
        assert steps[0]["wait_tcp"] == ["192.168.100.10", i.serve.master_port]
        assert steps[2]["run"] == ["docker", "start", "dgxc-spark-worker"]
        assert "rank" in steps[2]["what"]


def test_data_parallel_replicas_wait_for_the_heads_front_end_not_a_master_port() -> None:
    """TP 1 x DP 2: each node runs its own replica (no process group spans nodes, nothing
    listens on --master-port); a headless replica joins the head's --data-parallel-rpc-port."""
    i = inv(2, "native", tensor_parallel_size=1, data_parallel_size=2)
    steps = persist.boot_plan(i, "spark2", PATHS, CONFIG)["steps"]
    assert isinstance(steps, list)
    assert steps[0]["wait_tcp"] == ["192.168.100.10", i.serve.data_parallel_rpc_port]
    assert "data-parallel front end" in steps[0]["what"]


def test_on_failure_ray_every_node_ends_by_starting_its_own_watcher() -> None:
    """The head's watches vLLM; a worker's keeps its Ray worker container up."""
    i = inv(2, "ray", restart="on-failure")
    for node in ("spark1", "spark2"):
        steps = persist.boot_plan(i, node, PATHS, CONFIG)["steps"]
        assert isinstance(steps, list)
        assert steps[-1]["run"] == supervise.launch_argv(PATHS, persist.ship.path(PATHS)), node
        assert sum("watcher" in s["what"] for s in steps) == 1, node


def test_on_failure_native_every_rank_ends_by_starting_its_own_watcher() -> None:
    i = inv(3, "native", restart="on-failure")
    for node in ("spark1", "spark2", "spark3"):
        steps = persist.boot_plan(i, node, PATHS, CONFIG)["steps"]
        assert isinstance(steps, list)
        assert str(steps[-2]["what"]).startswith("start vLLM rank"), steps[-2]  # then its watcher
        assert steps[-1]["run"] == supervise.launch_argv(PATHS, persist.ship.path(PATHS)), node
        assert [s["what"] for s in steps].count("start the watcher (serve.restart: on-failure)") == 1
    never = persist.boot_plan(inv(3, "native"), "spark2", PATHS, CONFIG)["steps"]
    assert isinstance(never, list)
    assert all("watcher" not in s["what"] for s in never)


def test_plan_holds_no_secret_values_only_file_names() -> None:
    i = inv(2)
    data = persist.render_plan(persist.boot_plan(i, "spark1", PATHS, CONFIG)).decode()
    assert "--env-file" not in data and "hf_" not in data  # docker start reuses the container's
    assert json.loads(data)["config"] == CONFIG


def test_unit_is_a_oneshot_after_docker_and_the_network_wanted_by_multi_user() -> None:
    i = inv(2)
    doc = persist.boot_plan(i, "spark1", PATHS, CONFIG)
    text = persist.unit_text(i, "spark1", PATHS, doc)
    for line in ("Type=oneshot", "RemainAfterExit=yes", "Requires=docker.service",
                 "Wants=network-online.target", "After=docker.service network-online.target",
                 "WantedBy=multi-user.target"):
        assert line in text.splitlines()
    exec_line = next(ln for ln in text.splitlines() if ln.startswith("ExecStart="))
    assert shlex.split(exec_line[len("ExecStart="):]) == [
        "/usr/bin/python3", persist.ship.path(PATHS), "boot", PATHS.boot_plan]
    assert "User=" not in text
    assert "User=nvidia" in persist.unit_text(i, "spark1", PATHS, doc, "nvidia").splitlines()
    bound = int(next(ln for ln in text.splitlines() if ln.startswith("TimeoutStartSec="))
                .split("=")[1])
    assert bound > i.ray.start_timeout_s * 2  # every wait's own bound fits in it


def test_exec_start_words_escape_systemd_specifiers() -> None:
    assert persist._systemd_quote("/home/a b/x%y$z") == '"/home/a b/x%%y$$z"'
    assert persist._systemd_quote("/usr/bin/python3") == "/usr/bin/python3"
    assert persist.exec_line(["/a$b", "$c"]) == '"/a$b" "$$c"'  # no `$` expansion in the path


def test_persist_is_not_part_of_the_config_hash() -> None:
    i = inv(2)
    assert plan.config_hash(i, "img") == plan.config_hash(
        i.model_copy(update={"serve": i.serve.model_copy(update={"persist": True})}), "img")


def test_the_nodes_answer_is_read_back() -> None:
    unit = "[Unit]\nDescription=x"
    text = (f"@@who\n1000 nvidia sudo\n@@rc 0\n@@unit\n{unit}\n@@rc 0\n@@enabled\nenabled\n@@rc 0\n"
            '@@plan\n{"config": "abcd"}\n@@rc 0\n')
    got = persist.parse_read(text)
    assert (got.uid, got.user, got.how, got.enabled) == ("1000", "nvidia", "sudo", "enabled")
    assert got.unit == unit + "\n" and got.config == "abcd"
    none = persist.parse_read("@@who\n0 root root\n@@rc 0\n@@unit\n@@rc 1\n@@enabled\n"
                              "not-found\n@@rc 4\n@@plan\n@@rc 1\n")
    assert none.unit is None and none.plan is None and none.enabled == "not-found"


def test_status_reads_the_persist_section_and_compares_configs() -> None:
    probe = parse('@@ persist\nenabled enabled\nplan "config": "abcd"\n@@ rc 0\n')
    assert persist_of(probe) == ("enabled", "abcd")
    assert persist_of(parse("@@ persist\nenabled \n@@ rc 0\n")) == ("", None)
    assert persist_line("enabled", "abcd", "abcd") == "installed (matches running config)"
    assert persist_line("enabled", "abcd", "ef01") == "installed (stale: made for config abcd)"
    assert persist_line("not-found", None, "abcd") == "off"
    assert persist_line("enabled", "abcd", None).startswith("installed (made for config abcd")
    assert persist_summary({"a": "off", "b": "off"}) == "off"
    assert persist_summary({"a": "off", "b": "installed (matches running config)"}).startswith(
        "partly installed (only on b")


def test_a_node_without_systemd_or_root_is_refused_naming_the_fix() -> None:
    i = inv(2)
    read = persist.parse_read
    assert persist.problem(i, read("@@who\n0 root root\n@@rc 0\n")) is None
    assert persist.problem(i, read("@@who\n1000 nvidia sudo\n@@rc 0\n")) is None
    no_root = persist.problem(i, read("@@who\n1000 nvidia none\n@@rc 0\n"))
    assert no_root is not None and "nvidia is not root" in no_root and "sudo" in no_root
    no_systemd = persist.problem(i, read("@@who\n0 root nosystemd\n@@rc 0\n"))
    assert no_systemd is not None and "no systemctl" in no_systemd


# -- the unit as real systemd reads it (systemd-analyze verify: systemd's own parser, no PID 1
# needed; it warns on a key it cannot parse and fails on an ExecStart= it cannot execute) ---

SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
needs_systemd = pytest.mark.skipif(SYSTEMD_ANALYZE is None,
                                   reason="systemd-analyze missing (scripts/bootstrap installs it)")


def _verify(unit: Path) -> subprocess.CompletedProcess[str]:
    assert SYSTEMD_ANALYZE is not None
    return subprocess.run([SYSTEMD_ANALYZE, "verify", "--man=no", str(unit)], capture_output=True,
                          text=True, timeout=60, check=False)


@needs_systemd
@pytest.mark.parametrize("executor", ["ray", "native"])
def test_the_unit_is_accepted_by_systemds_own_parser_without_a_warning(
        executor: str, tmp_path: Path) -> None:
    i = inv(2, executor)
    unit = tmp_path / "dgxcluster-spark.service"
    unit.write_text(persist.unit_text(i, "spark1", PATHS, persist.boot_plan(i, "spark1", PATHS,
                                                                             CONFIG), user="nvidia"))
    r = _verify(unit)
    assert r.returncode == 0 and r.stderr.strip() == "", r.stderr
    bad = tmp_path / "bad.service"  # the check can fail: a key systemd cannot parse is named
    bad.write_text(unit.read_text().replace("Type=oneshot", "Type=one-shot"))
    assert "Failed to parse service type" in _verify(bad).stderr


@needs_systemd
def test_an_exec_start_word_with_spaces_and_specifiers_reaches_systemd_unchanged(
        tmp_path: Path) -> None:
    """A home with a space, `%` and `$` in it: systemd finds the program only if the quoting
    undid exactly what systemd expands (a wrong quote makes it look for another path)."""
    odd = tmp_path / "a b%n$HOME" / "run me"
    odd.parent.mkdir()
    odd.write_text("#!/bin/sh\n")
    odd.chmod(0o755)
    unit = tmp_path / "odd.service"
    unit.write_text(f"[Service]\nType=oneshot\nExecStart={persist.exec_line([str(odd), 'x'])}\n")
    r = _verify(unit)
    assert r.returncode == 0 and "not executable" not in r.stderr, r.stderr
    for wrong in (f'"{odd}"', persist._systemd_quote(str(odd))):  # % not doubled; $ doubled
        unit.write_text(f"[Service]\nType=oneshot\nExecStart={wrong} x\n")
        assert "not executable" in _verify(unit).stderr, wrong
