"""Inventory loading: good files load, every kind of bad file names the file and key path."""

from __future__ import annotations

from pathlib import Path

import pytest

from dgxcluster.errors import InventoryError
from dgxcluster.inventory import load_inventory, parse_inventory

REPO = Path(__file__).resolve().parents[2]
GOOD = """\
nodes:
  - name: spark1
    host: 10.0.0.1
    fabric_ip: 192.0.2.10
  - name: spark2
    host: spark2-alias
    port: 2222
    user: nvidia
    fabric_ip: 192.0.2.11
"""


def test_defaults_and_head() -> None:
    inv = parse_inventory(GOOD, environ={})
    assert inv.head_name == "spark1"
    assert inv.node("spark2").port == 2222
    assert inv.ssh.host_key_policy == "strict"
    assert inv.fabric.interfaces == ["enp1s0f1np1", "enP2p1s0f1np1"]
    assert inv.fabric.rdma_devices == ["rocep1s0f1", "roceP2p1s0f1"]
    assert inv.container.devices == ["/dev/infiniband"]


def test_example_inventory_is_valid() -> None:
    inv = load_inventory(REPO / "inventory" / "example.yaml", environ={})
    assert len(inv.nodes) == 2
    assert inv.head_name == inv.nodes[0].name


def test_env_overrides_file() -> None:
    inv = parse_inventory(
        GOOD, environ={"DGXCLUSTER_SSH__CONNECT_TIMEOUT": "3", "DGXCLUSTER_HEAD": "spark2"}
    )
    assert inv.ssh.connect_timeout == 3
    assert inv.head_name == "spark2"


def test_inventory_path_from_env(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text(GOOD)
    inv = load_inventory(None, environ={"DGXCLUSTER_INVENTORY": str(f)})
    assert inv.source == f.resolve()


def test_relative_paths_resolve_beside_the_file(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text(GOOD + "ssh:\n  known_hosts: kh\n")
    inv = load_inventory(f, environ={})
    assert inv.local_path(inv.ssh.known_hosts) == (tmp_path / "kh").resolve()


BAD = [
    ("nodes: [", "", "not valid YAML"),
    ("", "", "empty"),
    ("- a\n- b\n", "", "mapping"),
    (GOOD + "nodes: []\n", "nodes", "duplicate key"),
    (GOOD.replace("port: 2222", "prot: 2222"), "nodes[1].prot", "unknown key"),
    (GOOD.replace("port: 2222", "port: many"), "nodes[1].port", "integer"),
    (GOOD.replace("port: 2222", "port: 70000"), "nodes[1].port", "less than or equal"),
    (GOOD.replace("name: spark2", "name: spark1"), "nodes[1].name", "duplicate node name"),
    (GOOD.replace("fabric_ip: 192.0.2.11", "fabric_ip: 192.0.2.10"), "nodes[1].fabric_ip",
     "duplicate fabric_ip"),
    (GOOD.replace("fabric_ip: 192.0.2.11", "fabric_ip: not-an-ip"), "nodes[1].fabric_ip", "IPv4"),
    (GOOD + "head: spark9\n", "head", "names no node"),
    (GOOD + "ssh:\n  host_key_policy: yolo\n", "ssh.host_key_policy", "strict"),
    (GOOD + "ssh:\n  conect_timeout: 3\n", "ssh.conect_timeout", "unknown key"),
    (GOOD.replace("  - name: spark1\n", "  - host2: x\n    name: spark1\n"), "nodes[0].host2",
     "unknown key"),
    (GOOD.replace("    fabric_ip: 192.0.2.10\n", ""), "nodes[0].fabric_ip", "missing"),
    (GOOD.replace("host: 10.0.0.1", "host: '10.0.0.1; rm -rf /'"), "nodes[0].host", "hostname"),
]


@pytest.mark.parametrize(("text", "path", "words"), BAD)
def test_bad_inventories_name_file_and_key(text: str, path: str, words: str) -> None:
    with pytest.raises(InventoryError) as info:
        parse_inventory(text, "inv.yaml", environ={})
    msg = str(info.value)
    assert msg.startswith("inv.yaml")
    assert words.lower() in msg.lower()
    if path:
        assert f": {path}: " in msg


def test_bad_env_override_names_the_variable() -> None:
    with pytest.raises(InventoryError) as info:
        parse_inventory(GOOD, "inv.yaml", environ={"DGXCLUSTER_SSH__CONNECT_TIMEOUT": "soon"})
    assert "DGXCLUSTER_SSH__CONNECT_TIMEOUT" in str(info.value)
    assert "ssh.connect_timeout" in str(info.value)


def test_unknown_env_setting_is_refused() -> None:
    with pytest.raises(InventoryError, match="DGXCLUSTER_SHH__USER"):
        parse_inventory(GOOD, "inv.yaml", environ={"DGXCLUSTER_SHH__USER": "x"})


def test_line_numbers_are_reported() -> None:
    with pytest.raises(InventoryError) as info:
        parse_inventory(GOOD.replace("port: 2222", "port: many"), "inv.yaml", environ={})
    assert str(info.value).startswith("inv.yaml:7: nodes[1].port")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InventoryError, match="not found"):
        load_inventory(tmp_path / "nope.yaml", environ={})


def test_cross_check_on_an_overridden_value_names_the_variable_not_a_file_line() -> None:
    with pytest.raises(InventoryError) as info:
        parse_inventory(GOOD, "inv.yaml", environ={"DGXCLUSTER_HEAD": "spark9"})
    assert str(info.value) == ("inv.yaml: head: names no node: 'spark9' (nodes: spark1, spark2) "
                               "(from environment variable DGXCLUSTER_HEAD)")


def test_ray_version_reaches_the_build_as_ray_version_arg() -> None:
    inv = parse_inventory(GOOD + "ray: {version: 2.58.1}\nimage: {build_args: {X: '1'}}\n",
                          environ={})
    assert inv.build_args == {"RAY_VERSION": "2.58.1", "X": "1"}
    assert parse_inventory(GOOD, environ={}).build_args == {"RAY_VERSION": "2.57.1"}
    same = parse_inventory(GOOD + "image: {build_args: {RAY_VERSION: 2.57.1}}\n", environ={})
    assert same.build_args == {"RAY_VERSION": "2.57.1"}
    with pytest.raises(InventoryError) as e:
        parse_inventory(GOOD + "image: {build_args: {RAY_VERSION: 2.60.0}}\n", "inv.yaml", environ={})
    assert "image.build_args.RAY_VERSION" in str(e.value) and "set ray.version only" in str(e.value)
