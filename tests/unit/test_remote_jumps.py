"""Jump hosts: which hops stand before each node (inventory, then ~/.ssh/config, as ssh does),
and the pool that shares one checked connection per jump host. The hops themselves are
connected and checked end to end in tests/e2e/test_jump_hosts.py."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import paramiko
import pytest

from dgxcluster.errors import ConnectError, HostKeyError, InventoryError
from dgxcluster.inventory import parse_inventory
from dgxcluster.remote import jumps
from dgxcluster.remote.group import Cluster
from dgxcluster.remote.route import DIRECT, Hop, Route, SshLookup, resolve
from dgxcluster.secrets import Redactor
from tests.conftest import run_cli

INV = """\
nodes:
  - {name: n1, host: spark1, fabric_ip: 192.0.2.1}
  - {name: n2, host: 10.0.0.2, fabric_ip: 192.0.2.2}
  - {name: n3, host: 10.0.0.3, port: 2222, user: ops, fabric_ip: 192.0.2.3}
ssh: {user: nvidia}
"""


def lookup(text: str) -> SshLookup:
    return paramiko.SSHConfig.from_text(text).lookup


def route(inv_text: str, node: str, config: str = "") -> Route:
    inv = parse_inventory(inv_text, environ={})
    return resolve(inv, inv.node(node), lookup(config), "me")


def test_no_jump_anywhere_is_direct() -> None:
    assert route(INV, "n2") == DIRECT


def test_inventory_jump_through_a_node_reaches_it_as_the_inventory_does() -> None:
    text = INV.replace("fabric_ip: 192.0.2.2}", "fabric_ip: 192.0.2.2, jump: n3}")
    r = route(text, "n2")
    assert r.hops == (Hop("n3", "10.0.0.3", 2222, "ops"),)
    assert r.hops[0].described == "jump host n3 (ops@10.0.0.3:2222)"


def test_a_nodes_alias_is_looked_up_in_ssh_config() -> None:
    text = INV.replace("fabric_ip: 192.0.2.2}", "fabric_ip: 192.0.2.2, jump: n1}")
    cfg = "Host spark1\n  HostName 10.0.0.1\n  Port 2200\n  IdentityFile ~/.ssh/spark\n"
    (hop,) = route(text, "n2", cfg).hops
    assert (hop.label, hop.host, hop.port, hop.user) == ("n1", "10.0.0.1", 2200, "nvidia")
    assert hop.key_files[0].endswith("/.ssh/spark")


def test_an_address_hop_takes_its_user_from_the_hop_then_ssh_config_then_ssh_user() -> None:
    cfg = "Host bastion\n  HostName 203.0.113.5\n  User jumper\n"
    text = INV.replace("ssh: {user: nvidia}", "ssh: {user: nvidia, jump: 'bastion,root@10.9.9.9:23,plain'}")
    hops = route(text, "n2", cfg).hops
    assert [(h.label, h.host, h.port, h.user) for h in hops] == [
        ("bastion", "203.0.113.5", 22, "jumper"),
        ("root@10.9.9.9:23", "10.9.9.9", 23, "root"),
        ("plain", "plain", 22, "nvidia"),
    ]
    assert hops[1].described == "jump host root@10.9.9.9:23"


def test_ssh_config_proxyjump_chain_and_the_first_hops_own_jump() -> None:
    """As `ssh -J` does: hops of the chain in order, the first hop's own ProxyJump before it."""
    cfg = ("Host 10.0.0.2\n  ProxyJump gw1,gw2:2022\n"
           "Host gw1\n  HostName 198.51.100.1\n  ProxyJump outer\n"
           "Host gw2\n  ProxyJump ignored\n")
    hops = route(INV, "n2", cfg).hops
    assert [(h.label, h.host, h.port) for h in hops] == [
        ("outer", "outer", 22), ("gw1", "198.51.100.1", 22), ("gw2:2022", "gw2", 2022)]


def test_the_inventory_wins_over_ssh_config_and_none_means_direct() -> None:
    cfg = "Host 10.0.0.2\n  ProxyJump gw\n  ProxyCommand nc %h %p\n"
    assert route(INV, "n2", cfg).hops[0].label == "gw"
    direct = INV.replace("fabric_ip: 192.0.2.2}", "fabric_ip: 192.0.2.2, jump: none}")
    assert route(direct, "n2", cfg) == DIRECT
    assert route(INV, "n2", "Host 10.0.0.2\n  ProxyJump none\n") == DIRECT


def test_a_proxycommand_is_left_to_run_as_written() -> None:
    r = route(INV, "n2", "Host 10.0.0.2\n  ProxyCommand ssh -W %h:%p gw\n")
    assert r.hops == () and r.proxy_command == "ssh -W 10.0.0.2:22 gw"


def test_a_proxyjump_loop_in_ssh_config_names_the_node() -> None:
    cfg = "Host 10.0.0.2\n  ProxyJump a\nHost a\n  ProxyJump b\nHost b\n  ProxyJump a\n"
    with pytest.raises(ConnectError, match=r"^n2: unreachable: jump hosts form a loop: "
                       r"10.0.0.2 -> a -> b -> a"):
        route(INV, "n2", cfg)


def test_a_bad_proxyjump_in_ssh_config_names_it() -> None:
    with pytest.raises(ConnectError, match=r"~/.ssh/config: ProxyJump 'gw;x' \(for 10.0.0.2\)"):
        route(INV, "n2", "Host 10.0.0.2\n  ProxyJump gw;x\n")


# -- the pool: one connection per jump host, shared, refused once for everyone ---------------

class _Client:
    def __init__(self) -> None:
        self.closed = False

    def get_transport(self) -> Any:
        return None if self.closed else self

    def is_active(self) -> bool:
        return not self.closed

    def close(self) -> None:
        self.closed = True


class FakeGateways(jumps.Gateways):
    """The pool's bookkeeping with the network left out: `_connect` makes a fake client
    (or fails as scripted), `_channel` hands back a marker."""

    def __init__(self, fail: dict[str, BaseException] | None = None) -> None:
        inv = parse_inventory(INV, environ={})
        super().__init__(inv.ssh, Path("/nonexistent/known_hosts"), None)
        self.fail = fail or {}
        self.connects: list[str] = []
        self.clients: list[_Client] = []

    def _connect(self, hop: Hop, parent: Any) -> Any:
        self.connects.append(hop.label)
        if hop.label in self.fail:
            exc = self.fail[hop.label]
            timeout = self._ssh.connect_timeout
            raise jumps._failure(exc, hop.described, hop, self._known_hosts, timeout, timeout + 0.04)
        client = _Client()
        self.clients.append(client)
        return client

    def _channel(self, jump: Any, dest: tuple[str, int]) -> Any:
        return ("channel", jump.hop.label, dest)


GW = Hop("gw", "10.0.0.9", 22, "root")
GW2 = Hop("gw2", "10.0.0.10", 22, "root")


def test_nodes_behind_one_jump_host_share_one_connection_until_the_last_lets_go() -> None:
    pool = FakeGateways()
    leases = []
    threads = [threading.Thread(target=lambda n=n: leases.append(
        pool.open_channel(Route((GW,)), f"n{n}", ("10.0.0.2", 22))[0])) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert pool.connects == ["gw"] and pool.opened == 1
    for lease in leases[:-1]:
        lease.release()
    assert not pool.clients[0].closed
    leases[-1].release()
    leases[-1].release()  # twice is harmless
    assert pool.clients[0].closed


def test_a_chain_holds_its_first_hop_while_the_second_lives() -> None:
    pool = FakeGateways()
    deep, _ = pool.open_channel(Route((GW, GW2)), "n3", ("10.0.0.3", 22))
    shallow, _ = pool.open_channel(Route((GW,)), "n2", ("10.0.0.2", 22))
    assert pool.connects == ["gw", "gw2"]  # the first hop was reused
    shallow.release()
    assert [c.closed for c in pool.clients] == [False, False]
    deep.release()
    assert [c.closed for c in pool.clients] == [True, True]


def test_a_refused_jump_host_key_is_told_to_every_node_without_trying_again() -> None:
    err = HostKeyError("gw", "unknown host key for 10.0.0.9: ssh-ed25519 SHA256:x is not in kh",
                       hint="ssh-keyscan -p 22 10.0.0.9 >> kh")
    pool = FakeGateways(fail={"gw": err})
    for node in ("n2", "n3"):
        with pytest.raises(HostKeyError) as exc:
            pool.open_channel(Route((GW,)), node, ("10.0.0.2", 22))
        assert str(exc.value).startswith(
            f"{node}: unreachable: jump host gw (root@10.0.0.9:22): unknown host key for 10.0.0.9")
        assert exc.value.hint == "ssh-keyscan -p 22 10.0.0.9 >> kh"
    assert pool.connects == ["gw"]


def test_a_hung_jump_host_says_how_long_it_waited() -> None:
    pool = FakeGateways(fail={"gw": paramiko.SSHException("Error reading SSH protocol banner")})
    with pytest.raises(ConnectError, match=r"jump host gw \(root@10.0.0.9:22\): accepted the "
                       r"connection but sent no SSH banner .* gave up after 10.0s "
                       r"\(ssh.connect_timeout 10s\)"):
        pool.open_channel(Route((GW,)), "n2", ("10.0.0.2", 22))


def test_a_refused_connection_is_retried_not_remembered() -> None:
    pool = FakeGateways(fail={"gw": ConnectionRefusedError(111, "Connection refused")})
    for _ in range(2):
        with pytest.raises(jumps.Retryable, match="Connection refused"):
            pool.open_channel(Route((GW,)), "n2", ("10.0.0.2", 22))
    assert pool.connects == ["gw", "gw"]


# -- the key file ----------------------------------------------------------------------------

def test_a_missing_identity_file_is_bad_input_naming_key_and_path(tmp_path: Path) -> None:
    f = tmp_path / "inv.yaml"
    f.write_text(INV.replace("ssh: {user: nvidia}", "ssh: {user: nvidia, identity_file: nokey}"))
    from dgxcluster.inventory import load_inventory

    inv = load_inventory(f, environ={})
    with pytest.raises(InventoryError) as exc:
        Cluster(inv, redactor=Redactor())
    assert str(exc.value) == (
        f"{f}: ssh.identity_file: no such file: {tmp_path / 'nokey'} (the SSH private key for "
        "every node; fix the path, or remove the key to use your ssh agent and ~/.ssh/id_*)")
    (tmp_path / "nokey").mkdir()
    with pytest.raises(InventoryError, match=r"ssh\.identity_file: not a file"):
        Cluster(inv, redactor=Redactor())


def test_cli_missing_identity_file_exits_2_before_any_connection(tmp_path: Path) -> None:
    """Was "unreachable: ...: No such file or directory", exit 3, once per node."""
    f = tmp_path / "inv.yaml"
    f.write_text("nodes:\n  - {name: n1, host: 127.0.0.1, port: 9, fabric_ip: 192.0.2.1}\n"
                 "ssh: {identity_file: keys/id_missing, known_hosts: kh}\n")
    p = run_cli("-i", str(f), "exec", "--", "true", timeout=120)
    assert p.returncode == 2, p.stderr
    assert (f"error: {f}: ssh.identity_file: no such file: {tmp_path}/keys/id_missing"
            in p.stderr)
    assert "unreachable" not in p.stderr and "Traceback" not in p.stderr
