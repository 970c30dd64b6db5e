"""The testbed's pure parts: extra users' passwd/group/shadow lines, the operator's
~/.ssh/config with aliases and ProxyJump, the alias inventory, small-disk arguments.
(Used end to end by tests/e2e/test_jump_hosts.py and test_testbed.py.)"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

from dgxcluster.inventory import parse_inventory

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
from testbed_lib import disks, sh, users
from testbed_lib.inventory import alias_inventory, ssh_config
from testbed_lib.layout import Instance

PASSWD = ("root:x:0:0:root:/root:/bin/bash\n"
          "cloudsdk:x:1000:1000::/home/cloudsdk:/bin/bash\n"
          "squatter:x:2000:2000::/home/s:/bin/sh\n")
GROUP = "root:x:0:\ndocker:x:105:\nsquatter:x:2000:\nbusy:x:2001:\n"
SHADOW = "root:*:19000:0:99999:7:::\n"


def test_users_get_free_ids_the_same_on_every_node() -> None:
    got = users.allocate(["alice", "bob"], PASSWD, GROUP)
    assert got == [users.User("alice", 2002), users.User("bob", 2003)]
    with pytest.raises(sh.TestbedError, match="already has a user"):
        users.allocate(["cloudsdk"], PASSWD, GROUP)


def test_user_db_adds_login_lines_and_docker_membership() -> None:
    alice = users.User("alice", 2002)
    db = users.user_db([alice], {"passwd": PASSWD, "group": GROUP, "shadow": SHADOW})
    assert db["passwd"].endswith("alice:x:2002:2002::/home/alice:/bin/bash\n")
    assert "docker:x:105:alice\n" in db["group"] and db["group"].endswith("alice:x:2002:\n")
    # "*": no password, but not locked ("!" would make sshd refuse the key without PAM)
    assert db["shadow"].endswith("alice:*:19000:0:99999:7:::\n")
    assert db["passwd"].startswith(PASSWD)  # the host's users stay


def test_user_names() -> None:
    assert users.check_name("op-2") == "op-2"
    for bad in ("root", "Alice", "a b", "-x", ""):
        with pytest.raises(sh.TestbedError):
            users.check_name(bad)


def _inst(n: int = 3) -> Instance:
    return Instance(name="g9", index=7, nodes=n)


def test_ssh_config_aliases_each_node_and_adds_proxyjump() -> None:
    text = ssh_config(_inst(), {"node3": "node1,node2"}, known_hosts=Path("/kh"))
    assert "Host node1\n  HostName 10.210.7.11\n  User root\n  IdentityFile " \
        "/var/lib/dgxtb/g9/id_ed25519\n  UserKnownHostsFile /kh\n" in text
    assert text.count("ProxyJump") == 1 and "  ProxyJump node1,node2\n" in text
    with pytest.raises(ValueError, match="no node 'node7'"):
        ssh_config(_inst(), {"node2": "node7"})


def test_alias_inventory_is_valid_and_uses_the_aliases(tmp_path: Path) -> None:
    text = alias_inventory(_inst(2), tmp_path / "testbed-g9.known_hosts")
    inv = parse_inventory(text, environ={})
    assert [n.host for n in inv.nodes] == ["node1", "node2"]
    assert str(inv.ssh.known_hosts) == str(tmp_path / "testbed-g9.known_hosts")
    assert Path(yaml.safe_load(text)["image"]["context"]).is_absolute()


def test_small_disk_arguments() -> None:
    disks.check("/root/.cache/huggingface", "64m")
    for path, size in (("relative", "1m"), ("/a b", "1m"), ("/x", "0"), ("/x", "1t"),
                       ("/x", "-1m")):
        with pytest.raises(sh.TestbedError):
            disks.check(path, size)
