"""Jump hosts on the emulated cluster: node2 and node3 answer only the other nodes, not this
machine (`scripts/testbed isolate`), as behind a firewalled management network; node1 is the
jump host. Every hop is checked against the same known_hosts with the same policy: a jump
host with a changed (or, strict, unknown) key refuses every node behind it, and nothing runs
there (their sshd logs no login). Both ways of saying it are covered: the inventory
(`ssh.jump`, `nodes[].jump`) and ~/.ssh/config (ProxyJump, chains `a,b`).
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.conftest import Testbed, flat, run_cli

pytestmark = pytest.mark.e2e

BEHIND = ("node2", "node3")
TIMEOUT = 2.0


@pytest.fixture
def behind(testbed3: Testbed) -> Iterator[Testbed]:
    """testbed3 with node2 and node3 unreachable from this machine; repaired after."""
    testbed3.repair()
    for node in BEHIND:
        testbed3.tb("isolate", node)
    yield testbed3
    testbed3.repair()


def _addr(tb: Testbed, node: str) -> str:
    inv = yaml.safe_load(tb.inventory.read_text())
    return str(next(n["host"] for n in inv["nodes"] if n["name"] == node))


def _inventory(tb: Testbed, tmp_path: Path, *, ssh: dict[str, object] | None = None,
               nodes: dict[str, dict[str, object]] | None = None,
               known_hosts: Path | None = None) -> Path:
    inv = tb.portable_doc()
    inv["ssh"]["known_hosts"] = str(known_hosts or tb.known_hosts)
    inv["ssh"].update(ssh or {})
    for n in inv["nodes"]:
        n.update((nodes or {}).get(n["name"], {}))
    path = tmp_path / "inv.yaml"
    path.write_text(yaml.safe_dump(inv))
    return path


def _home(tb: Testbed, tmp_path: Path, config: str) -> dict[str, str]:
    """A HOME whose ~/.ssh/config is `config`: how dgxcluster (through Fabric) finds it."""
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True, exist_ok=True)
    (home / ".ssh" / "config").write_text(config)
    return {"HOME": str(home)}


def _proxyjump_config(tb: Testbed) -> str:
    """~/.ssh/config: node2 through node1, node3 through the chain node1,node2."""
    a1, a2, a3 = (_addr(tb, n) for n in ("node1", "node2", "node3"))
    key = yaml.safe_load(tb.inventory.read_text())["ssh"]["identity_file"]
    return (f"Host {a2}\n  ProxyJump root@{a1}\n"
            f"Host {a3}\n  ProxyJump root@{a1},root@{a2}\n"
            f"Host *\n  IdentityFile {key}\n")  # as a user's own key in ~/.ssh would be


def _logins(tb: Testbed, node: str) -> int:
    return len(tb.tb("logins", node).stdout.splitlines())


def _ran(tb: Testbed, node: str, path: str) -> bool:
    return tb.node_exec(node, "test", "-e", path, check=False).returncode == 0


def test_isolated_nodes_are_unreachable_directly(behind: Testbed) -> None:
    """The testbed's part: without a jump host, node2 and node3 cannot be reached at all."""
    p = behind.dgx("exec", "--", "hostname", env={"DGXCLUSTER_SSH__CONNECT_TIMEOUT": "2"},
                   timeout=120)
    assert p.returncode == 3, p.stderr
    assert p.stdout == "node1: node1\n"
    for node in BEHIND:
        assert f"{node}: unreachable: connecting to root@{_addr(behind, node)}:22 timed out" \
            in p.stderr


def test_inventory_jump_reaches_nodes_behind_one_shared_connection(behind: Testbed,
                                                                   tmp_path: Path) -> None:
    """`ssh.jump: node1`: node1 itself is reached directly (it is the jump host), node2 and
    node3 through one checked connection to node1, shared."""
    inv = _inventory(behind, tmp_path, ssh={"jump": "node1"})
    before = _logins(behind, "node1")
    p = run_cli("-i", str(inv), "exec", "--", "hostname")
    assert p.returncode == 0, p.stderr
    assert sorted(p.stdout.splitlines()) == ["node1: node1", "node2: node2", "node3: node3"]
    # node1's own connection, plus ONE jump connection shared by node2 and node3
    assert _logins(behind, "node1") - before == 2


def test_node_jump_overrides_and_chains(behind: Testbed, tmp_path: Path) -> None:
    """nodes[].jump: node3 through node2, which itself is behind node1 (the first hop's own
    jump comes first, as with ssh -J): node1 -> node2 -> node3."""
    inv = _inventory(behind, tmp_path, nodes={"node2": {"jump": "node1"},
                                              "node3": {"jump": "node2"}})
    before = _logins(behind, "node2")
    p = run_cli("-i", str(inv), "exec", "-n", "node3", "--", "hostname")
    assert p.returncode == 0, p.stderr
    assert p.stdout == "node3: node3\n"
    assert _logins(behind, "node2") - before == 1  # node2 served as the second hop


def test_ssh_config_proxyjump_and_chain(behind: Testbed, tmp_path: Path) -> None:
    env = _home(behind, tmp_path, _proxyjump_config(behind))
    p = behind.dgx("exec", "--", "hostname", env=env)
    assert p.returncode == 0, p.stderr
    assert sorted(p.stdout.splitlines()) == ["node1: node1", "node2: node2", "node3: node3"]


@pytest.mark.parametrize("how", ["ssh_config", "inventory"])
@pytest.mark.parametrize("command", ["exec", "stop"])
def test_rekeyed_jump_host_refuses_every_node_behind_it(behind: Testbed, tmp_path: Path,
                                                        how: str, command: str) -> None:
    """node1's host key changed: node1, and node2 and node3 behind it, are refused, each
    naming the jump host, the known_hosts file and the fix; nothing logs in behind it."""
    if how == "ssh_config":
        inv, env = behind.inventory, _home(behind, tmp_path, _proxyjump_config(behind))
    else:
        inv, env = _inventory(behind, tmp_path, ssh={"jump": "node1"}), {}
    mark = f"/tmp/jump-{command}-{how}"
    argv = ["exec", "--", "touch", mark] if command == "exec" else ["stop"]
    behind.tb("rekey", "node1")
    logins = {n: _logins(behind, n) for n in behind.nodes}
    p = run_cli("-i", str(inv), *argv, env=env, timeout=120)
    text = flat(p.stderr)
    assert p.returncode == 3, p.stderr
    kh = str(behind.known_hosts)
    a1 = _addr(behind, "node1")
    for node in BEHIND:
        assert re.search(rf"{node}: unreachable: jump host (node1 \()?root@{re.escape(a1)}:22\)?: "
                         rf"HOST KEY CHANGED for {re.escape(a1)}: the jump host offered", text), text
    assert "node1: unreachable: HOST KEY CHANGED" in text
    assert text.count(f"ssh-keyscan -p 22 {a1} >> {kh}") == 3  # the fix, for each node
    # nothing ran anywhere: no login on any node, not even the jump host
    assert {n: _logins(behind, n) for n in behind.nodes} == logins
    assert not any(_ran(behind, n, mark) for n in behind.nodes)


def test_unknown_jump_key_strict_refuses_accept_new_records(behind: Testbed,
                                                            tmp_path: Path) -> None:
    a1 = _addr(behind, "node1")
    kh = tmp_path / "known_hosts"
    kh.write_text("".join(ln for ln in behind.known_hosts.read_text().splitlines(keepends=True)
                          if not ln.startswith(a1 + " ")))
    logins = _logins(behind, "node2")
    strict = _inventory(behind, tmp_path, ssh={"jump": "node1"}, known_hosts=kh)
    p = run_cli("-i", str(strict), "exec", "-n", "node2", "--", "hostname")
    assert p.returncode == 3, p.stderr
    text = flat(p.stderr)
    assert f"node2: unreachable: jump host node1 (root@{a1}:22): unknown host key for {a1}" in text
    assert f"ssh-keyscan -p 22 {a1} >> {kh}" in text and "check the fingerprint on the jump host" \
        in text
    assert _logins(behind, "node2") == logins
    assert a1 not in kh.read_text()  # strict records nothing

    relaxed = _inventory(behind, tmp_path, ssh={"jump": "node1", "host_key_policy": "accept-new"},
                         known_hosts=kh)
    p = run_cli("-i", str(relaxed), "exec", "-n", "node2", "--", "hostname")
    assert p.returncode == 0, p.stderr
    assert p.stdout == "node2: node2\n"
    assert kh.read_text().count(f"{a1} ssh-ed25519 ") == 1  # the jump host's key, recorded


def test_hung_jump_host_names_it_and_the_time_waited(behind: Testbed, tmp_path: Path) -> None:
    inv = _inventory(behind, tmp_path, ssh={"jump": "node1", "connect_timeout": TIMEOUT})
    behind.tb("hang", "node1")
    p = run_cli("-i", str(inv), "exec", "--", "hostname", timeout=120)
    text = flat(p.stderr)
    assert p.returncode == 3, text
    a1 = _addr(behind, "node1")
    for node in BEHIND:
        m = re.search(rf"{node}: unreachable: jump host node1 \(root@{re.escape(a1)}:22\): "
                      r"accepted the connection but sent no SSH banner .*gave up after "
                      r"([0-9.]+)s \(ssh.connect_timeout 2s\)", text)
        assert m, text
        assert TIMEOUT <= float(m.group(1)) < 3 * TIMEOUT  # the real wait, not the setting
    assert "Traceback" not in text


def test_testbed_isolate_is_undone_by_up(testbed3: Testbed) -> None:
    testbed3.tb("isolate", "node2")
    assert testbed3.status()["nodes"][1]["isolated"] is True  # type: ignore[index]
    testbed3.repair()
    assert testbed3.status()["nodes"][1]["isolated"] is False  # type: ignore[index]
    addr = _addr(testbed3, "node2")
    ok = subprocess.run(["timeout", "5", "bash", "-c", f"echo > /dev/tcp/{addr}/22"],
                        check=False).returncode
    assert ok == 0
