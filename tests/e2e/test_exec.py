"""`dgxcluster exec` against real sshd on the emulated cluster."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.conftest import Testbed, run_cli

pytestmark = pytest.mark.e2e


def test_exec_on_three_nodes_prefixes_each_line(testbed3: Testbed) -> None:
    p = testbed3.dgx("exec", "--", "hostname")
    assert p.returncode == 0, p.stderr
    assert sorted(p.stdout.splitlines()) == ["node1: node1", "node2: node2", "node3: node3"]


def test_exec_json_and_node_selection(testbed3: Testbed) -> None:
    p = testbed3.dgx("exec", "--json", "--node", "node2", "--", "sh", "-c", "echo out; echo err >&2")
    assert p.returncode == 0, p.stderr
    rows = json.loads(p.stdout)
    assert [r["node"] for r in rows] == ["node2"]
    assert rows[0]["stdout"] == "out\n"
    assert rows[0]["stderr"] == "err\n"
    assert rows[0]["exit_code"] == 0
    assert rows[0]["duration_s"] >= 0


def test_exec_failed_command_exit_1(testbed3: Testbed) -> None:
    p = testbed3.dgx("exec", "--", "sh", "-c", 'test "$(hostname)" != node2')
    assert p.returncode == 1
    assert "node2: exited 1" in p.stderr


def test_hostile_argument_arrives_as_one_argv_element(testbed3: Testbed) -> None:
    value = "a b;touch /tmp/pwned $(touch /tmp/pwned2) `id` 'q\" über"
    p = testbed3.dgx("exec", "--json", "-n", "node1", "--", "printf", "%s", value)
    assert json.loads(p.stdout)[0]["stdout"] == value
    assert testbed3.node_exec("node1", "ls", "/tmp/pwned", check=False).returncode != 0


def test_stopped_sshd_reported_unreachable_others_succeed(healthy3: Testbed) -> None:
    healthy3.tb("sshd", "node2", "stop")
    p = healthy3.dgx("exec", "--", "hostname")
    assert p.returncode == 3
    assert sorted(p.stdout.splitlines()) == ["node1: node1", "node3: node3"]
    assert "node2" in p.stderr and "unreachable" in p.stderr


def test_changed_host_key_is_refused_and_nothing_runs(healthy3: Testbed) -> None:
    healthy3.tb("rekey", "node3")
    p = healthy3.dgx("exec", "--", "touch", "/tmp/ran-here")
    assert p.returncode == 3
    assert "HOST KEY CHANGED" in p.stderr and "node3" in p.stderr
    assert str(healthy3.known_hosts) in p.stderr
    assert healthy3.node_exec("node3", "ls", "/tmp/ran-here", check=False).returncode != 0
    assert healthy3.node_exec("node1", "ls", "/tmp/ran-here", check=False).returncode == 0
    healthy3.node_exec("node1", "rm", "-f", "/tmp/ran-here")
    healthy3.node_exec("node2", "rm", "-f", "/tmp/ran-here")


def _inventory_with_empty_known_hosts(tb: Testbed, tmp_path: Path, policy: str) -> Path:
    inv = tmp_path / "inv.yaml"
    text = tb.inventory.read_text().replace(f"known_hosts: {tb.known_hosts.name}",
                                            "known_hosts: kh")
    text = text.replace("host_key_policy: strict", f"host_key_policy: {policy}")
    inv.write_text(text)
    (tmp_path / "kh").write_text("")
    return inv


def test_unknown_host_key_refused_in_strict_mode(testbed3: Testbed, tmp_path: Path) -> None:
    inv = _inventory_with_empty_known_hosts(testbed3, tmp_path, "strict")
    p = run_cli("-i", str(inv), "exec", "--", "hostname")
    assert p.returncode == 3
    assert p.stdout == ""
    assert "unknown host key" in p.stderr and "ssh-keyscan" in p.stderr


def test_accept_new_records_keys_then_still_refuses_changes(healthy3: Testbed,
                                                            tmp_path: Path) -> None:
    inv = _inventory_with_empty_known_hosts(healthy3, tmp_path, "accept-new")
    p = run_cli("-i", str(inv), "exec", "--", "hostname")
    assert p.returncode == 0, p.stderr
    assert len((tmp_path / "kh").read_text().splitlines()) == 3
    healthy3.tb("rekey", "node1")
    p = run_cli("-i", str(inv), "exec", "--", "hostname")
    assert p.returncode == 3
    assert "HOST KEY CHANGED" in p.stderr


def test_hung_node_times_out_and_is_named(healthy3: Testbed) -> None:
    healthy3.tb("hang", "node2")
    p = healthy3.dgx("exec", "--", "hostname", env={"DGXCLUSTER_SSH__CONNECT_TIMEOUT": "2"},
                     timeout=60)
    assert p.returncode == 3
    assert "node2" in p.stderr and "banner" in p.stderr
    assert sorted(p.stdout.splitlines()) == ["node1: node1", "node3: node3"]


def test_command_timeout_names_node(testbed3: Testbed) -> None:
    p = testbed3.dgx("exec", "--timeout", "1", "-n", "node1", "--", "sleep", "30", timeout=60)
    assert p.returncode == 1
    assert "node1" in p.stderr and "timed out" in p.stderr


def test_ssh_config_alias_works_as_host(testbed3: Testbed, tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "config").write_text("Host first-spark\n  HostName 10.210.255.255\n")
    ip = next(ln.split()[1] for ln in testbed3.inventory.read_text().splitlines()
          if ln.strip().startswith("host:"))
    (home / ".ssh" / "config").write_text(f"Host first-spark\n  HostName {ip}\n  User root\n")
    inv = tmp_path / "inv.yaml"
    inv.write_text(testbed3.inventory.read_text().replace(f"host: {ip}\n", "host: first-spark\n")
                   .replace(f"known_hosts: {testbed3.known_hosts.name}",
                            f"known_hosts: {testbed3.known_hosts}"))
    p = run_cli("-i", str(inv), "exec", "-n", "node1", "--", "hostname", env={"HOME": str(home)})
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "node1: node1"


BROKEN = {
    "nodes[1].port": ("    fabric_ip: {f2}\n", "    fabric_ip: {f2}\n    port: twenty\n"),
    "nodes[0].prot": ("    fabric_ip: {f1}\n", "    fabric_ip: {f1}\n    prot: 22\n"),
    "nodes[1].name": ("- name: node2", "- name: node1"),
    "nodes[1].host": ("host: {h2}", "host: {h1}"),
    "nodes[1].fabric_ip": ("fabric_ip: {f2}\n", "fabric_ip: {f1}\n"),
    "head": ("head: node1", "head: node9"),
    "ssh.host_key_policy": ("host_key_policy: strict", "host_key_policy: trusting"),
    "ssh.connect_timeout": ("connect_timeout: 5", "connect_timeout: -1"),
    "ssh.colour": ("  user: root\n", "  user: root\n  colour: blue\n"),
    "nodes[0].fabric_ip": ("fabric_ip: {f1}\n", "fabric_ip: 300.1.2.3\n"),
}


@pytest.mark.parametrize("keypath", sorted(BROKEN))
def test_broken_inventory_exits_2_names_key_and_connects_nowhere(
    testbed3: Testbed, tmp_path: Path, keypath: str
) -> None:
    text = testbed3.inventory.read_text()
    lines = text.splitlines()
    hosts = [ln.split()[-1] for ln in lines if ln.strip().startswith("host:")]
    fabs = [ln.split()[-1] for ln in lines if ln.strip().startswith("fabric_ip:")]
    subs = {"h1": hosts[0], "h2": hosts[1], "f1": fabs[0], "f2": fabs[1]}
    old, new = (s.format(**subs) for s in BROKEN[keypath])
    assert old in text, old
    bad = tmp_path / "broken.yaml"
    bad.write_text(text.replace(old, new, 1).replace(
        f"known_hosts: {testbed3.known_hosts.name}", f"known_hosts: {testbed3.known_hosts}"))
    marker = f"/tmp/connected-{keypath}"
    p = run_cli("-i", str(bad), "exec", "--", "touch", marker)
    assert p.returncode == 2, p.stderr
    assert str(bad) in p.stderr
    assert keypath in p.stderr
    assert "Traceback" not in p.stderr
    for node in testbed3.nodes:
        assert testbed3.node_exec(node, "ls", marker, check=False).returncode != 0


def test_missing_inventory_exit_2(tmp_path: Path) -> None:
    p = run_cli("-i", str(tmp_path / "none.yaml"), "exec", "--", "true")
    assert p.returncode == 2
    assert "not found" in p.stderr


def test_unknown_option_exit_2() -> None:
    p = run_cli("exec", "--frobnicate", "--", "true")
    assert p.returncode == 2
    assert "--frobnicate" in p.stderr


def test_testbed_nodes_are_separate_machines(testbed3: Testbed) -> None:
    """Each node has its own hostname, host key, /tmp and network namespace."""
    p = testbed3.dgx("exec", "--json", "--", "sh", "-c",
                     "hostname; cat /etc/ssh/ssh_host_ed25519_key.pub 2>/dev/null | wc -l; "
                     "ip -o -4 addr show enP7s7 | awk '{print $4}'")
    rows = json.loads(p.stdout)
    addrs = {r["stdout"].split()[-1] for r in rows}
    assert len(addrs) == 3
    testbed3.node_exec("node1", "touch", "/tmp/only-on-node1")
    assert testbed3.node_exec("node2", "ls", "/tmp/only-on-node1", check=False).returncode != 0
    testbed3.node_exec("node1", "rm", "/tmp/only-on-node1")
    assert shutil.which("ip")


def test_verbose_shows_each_remote_argv_with_node_and_duration(testbed3: Testbed) -> None:
    p = testbed3.dgx("-v", "exec", "-n", "node2", "--", "echo", "hello world")
    assert p.returncode == 0
    line = next(ln for ln in p.stderr.splitlines() if "remote.run" in ln)
    assert "node=node2" in line
    assert "argv='echo '\"'\"'hello world'\"'\"''" in line or "hello world" in line
    assert "duration_s=" in line


def test_json_log_format(testbed3: Testbed) -> None:
    p = testbed3.dgx("-v", "--log-format", "json", "exec", "-n", "node1", "--", "true")
    assert p.returncode == 0
    events = [json.loads(ln) for ln in p.stderr.splitlines() if ln.startswith("{")]
    run = next(e for e in events if e["event"] == "remote.run")
    assert run["node"] == "node1" and run["argv"] == "true" and run["exit"] == 0


def test_secret_from_environment_is_masked_in_verbose_output(testbed3: Testbed) -> None:
    token = "hf_" + "Q" * 30
    p = testbed3.dgx("-v", "exec", "-n", "node1", "--", "echo", token, env={"HF_TOKEN": token})
    assert token not in p.stdout + p.stderr
    assert "******" in p.stdout


#: Runs argv and writes its peak RSS (kB) to a file. A small process of its own: a child's
#: ru_maxrss counts the memory of the process it was forked from (pytest's, here).
_MEASURE = """
import os, subprocess, sys
proc = subprocess.Popen(sys.argv[2:])
_, status, usage = os.wait4(proc.pid, 0)
open(sys.argv[1], "w").write(str(usage.ru_maxrss))
sys.exit(os.waitstatus_to_exitcode(status))
"""


def _exec_measured(tb: Testbed, *args: str) -> tuple[int, bytes, bytes, float]:
    """Run the CLI, its output to files: (exit code, stdout, stderr, its peak RSS in MB)."""
    import os
    import subprocess
    import sys
    import tempfile

    from tests.conftest import REPO

    env = {k: v for k, v in os.environ.items() if not k.startswith("DGXCLUSTER_")}
    with tempfile.TemporaryDirectory() as tmp, tempfile.TemporaryFile() as out, \
            tempfile.TemporaryFile() as err:
        rss = Path(tmp) / "rss"
        code = subprocess.run([sys.executable, "-c", _MEASURE, str(rss), sys.executable, "-m",
                               "dgxcluster", "-i", str(tb.inventory), *args], stdout=out,
                              stderr=err, env=env, cwd=str(REPO), timeout=600,
                              check=False).returncode
        out.seek(0)
        err.seek(0)
        return code, out.read(), err.read(), int(rss.read_text()) / 1024


def test_big_output_streams_pdsh_style_in_bounded_memory(testbed3: Testbed) -> None:
    """100 MB of short lines, and one 40 MB line: every byte printed, each line prefixed,
    the CLI's peak RSS under 100 MB (before: the whole output was kept, ~5x its size, and a
    long line was re-split on every chunk: 40 MB took 19 s). --json keeps each stream's
    last MiB and says how much it dropped."""
    n = 2_440_000  # lines of 41 bytes: 100 MB
    lines = f"yes 0123456789012345678901234567890123456789 | head -n {n}"
    code, out, err, rss = _exec_measured(testbed3, "exec", "-n", "node1", "--", "sh", "-c", lines)
    assert code == 0, err
    assert len(out) == n * (41 + len("node1: "))
    assert out.startswith(b"node1: 0123") and out.count(b"\nnode1: 0123456789") == n - 1
    assert rss < 100, f"peak RSS {rss:.0f} MB"

    one = "head -c 40000000 /dev/zero | tr '\\0' x"
    code, out, err, rss = _exec_measured(testbed3, "exec", "-n", "node2", "--", "sh", "-c", one)
    assert code == 0, err
    pieces = out.split(b"\n")[:-1]  # a line over 1 MiB is printed in 1 MiB pieces
    assert all(p.startswith(b"node2: ") for p in pieces)
    assert sum(len(p) - len(b"node2: ") for p in pieces) == 40_000_000
    assert rss < 100, f"peak RSS {rss:.0f} MB"

    code, out, err, rss = _exec_measured(testbed3, "exec", "--json", "-n", "node3", "--",
                                         "sh", "-c", lines)
    assert code == 0, err
    row = json.loads(out)[0]
    assert row["truncated"] is True
    assert len(row["stdout"]) == 1 << 20 and row["stdout"].endswith("0123456789\n")
    assert row["dropped_bytes"] == {"stdout": n * 41 - (1 << 20), "stderr": 0}
    assert rss < 100, f"peak RSS {rss:.0f} MB"
