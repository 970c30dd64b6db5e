"""The fabric topology in the inventory: inferred where it is unambiguous, every
inconsistency refused at load naming the file, line and key; the worked examples load."""

from __future__ import annotations

from pathlib import Path

import pytest

from dgxcluster.errors import InventoryError
from dgxcluster.inventory import load_inventory, parse_inventory, topology
from dgxcluster.inventory.load import Inventory

EXAMPLES = Path(__file__).resolve().parents[2] / "inventory"


def node(i: int, extra: str = "") -> str:
    return (f"  - {{name: s{i}, host: 10.0.0.{i}, fabric_ip: 192.168.100.{i}, "
            f"rail_ips: [192.168.100.{i}, 192.168.101.{i}]{extra}}}\n")


def nodes(n: int) -> str:
    return "nodes:\n" + "".join(node(i) for i in range(1, n + 1))


def ring(n: int, extra: str = "", mgmt: bool = True) -> str:
    """n nodes, port 0 of each into port 1 of the next; a subnet per cable twin."""
    text = "nodes:\n" + "".join(f"  - {{name: s{i}, host: 10.0.0.{i}, fabric_ip: 10.0.0.{i}}}\n"
                                for i in range(1, n + 1))
    text += "fabric:\n" + extra + "  links:\n"
    for k in range(n):
        a, b = k + 1, (k + 1) % n + 1
        for t, (pa, pb) in enumerate((("enp1s0f0np0", "enp1s0f1np1"),
                                      ("enP2p1s0f0np0", "enP2p1s0f1np1"))):
            net = 2 * k + t
            text += (f"    - {{subnet: 10.20.{net}.0/24, ends: [{{node: s{a}, interface: {pa}, "
                     f"address: 10.20.{net}.1{a}}}, {{node: s{b}, interface: {pb}, "
                     f"address: 10.20.{net}.1{b}}}]}}\n")
    return text


def load(text: str) -> Inventory:
    return parse_inventory(text, "inv.yaml", environ={})


def refused(text: str) -> str:
    with pytest.raises(InventoryError) as exc:
        load(text)
    return str(exc.value)


@pytest.mark.parametrize(("text", "kind"), [
    ("nodes:\n" + node(1), "single"),
    (nodes(2), "direct"),
    (nodes(4), "switch"),
    (ring(3), "mesh"),  # three Sparks in a ring are also a full mesh
    (ring(4), "ring"),
])
def test_inferred_where_unambiguous(text: str, kind: str) -> None:
    topo = topology.of(load(text))
    assert topo.kind == kind and topo.inferred


def test_the_worked_examples_load_as_named() -> None:
    kinds = {"example-switch.yaml": "switch", "example-asymmetric.yaml": "direct",
             "example-ring3.yaml": "ring", "example-ring4.yaml": "ring", "example.yaml": "direct"}
    for name, kind in kinds.items():
        assert topology.of(load_inventory(EXAMPLES / name, environ={})).kind == kind, name


def test_switch_segments_are_rails_and_every_pair_meets() -> None:
    topo = topology.of(load(nodes(4)))
    assert [s.name for s in topo.segments] == ["rail 0", "rail 1"]
    assert [str(s.network) for s in topo.segments] == ["192.168.100.0/24", "192.168.101.0/24"]
    assert len(topo.pairs()) == 2 * 6  # all pairs of four nodes, on both rails
    assert topo.neighbours("s1") == {"s2", "s3", "s4"}
    assert topo.bootstrap_interface("s3") == "enp1s0f1np1"


def test_asymmetric_cabling_gives_each_node_its_own_rails() -> None:
    inv = load_inventory(EXAMPLES / "example-asymmetric.yaml", environ={})
    topo = topology.of(inv)
    assert [p.interface for p in topo.ports("spark1")] == ["enp1s0f1np1", "enP2p1s0f1np1"]
    assert [p.interface for p in topo.ports("spark2")] == ["enp1s0f0np0", "enP2p1s0f0np0"]
    assert topo.rdma_devices("spark2") == ["rocep1s0f0", "roceP2p1s0f0"]
    rail0 = topo.segments[0]
    assert [(p.node, p.interface) for p in rail0.ports] == [("spark1", "enp1s0f1np1"),
                                                             ("spark2", "enp1s0f0np0")]


def test_ring_links_and_their_devices() -> None:
    topo = topology.of(load(ring(4)))
    assert len(topo.segments) == 8 and topo.point_to_point
    assert topo.neighbours("s1") == {"s2", "s4"}
    assert topo.rdma_devices("s2") == ["rocep1s0f1", "roceP2p1s0f1", "rocep1s0f0", "roceP2p1s0f0"]
    assert topo.bootstrap_interface("s2") == "enP7s7"
    assert [(m.interface, q.node, i) for m, q, i in topo.links_of("s1")] == [
        ("enp1s0f0np0", "s2", 0), ("enP2p1s0f0np0", "s2", 1),
        ("enp1s0f1np1", "s4", 6), ("enP2p1s0f1np1", "s4", 7)]


@pytest.mark.parametrize(("iface", "dev"), [
    ("enp1s0f0np0", "rocep1s0f0"), ("enP2p1s0f1np1", "roceP2p1s0f1"), ("eth0", None)])
def test_spark_rdma_names(iface: str, dev: str | None) -> None:
    assert topology.spark_rdma_name(iface) == dev


# -- refused at load, at the key -------------------------------------------------------------

def test_a_link_end_naming_an_unknown_node() -> None:
    out = refused(ring(3).replace("{node: s3, interface: enp1s0f1np1",
                                  "{node: s9, interface: enp1s0f1np1"))
    assert "inv.yaml:9: fabric.links[2].ends[1].node: names no node: 's9' (nodes: s1, s2, s3)" in out


def test_an_address_outside_its_links_subnet() -> None:
    out = refused(ring(3).replace("address: 10.20.2.13}", "address: 10.21.2.13}"))
    assert ("fabric.links[2].ends[1].address: 10.21.2.13 is outside the link's subnet "
            "10.20.2.0/24") in out


def test_a_node_with_no_path_to_the_head() -> None:
    text = ring(3) + "".join([])
    text = text.replace("  - {name: s3, host: 10.0.0.3, fabric_ip: 10.0.0.3}\n",
                        "  - {name: s3, host: 10.0.0.3, fabric_ip: 10.0.0.3}\n"
                        "  - {name: s4, host: 10.0.0.4, fabric_ip: 10.0.0.4}\n")
    out = refused(text)
    assert "inv.yaml:5: nodes[3]: s4 has no path to the head s1 through fabric.links" in out


def test_an_open_chain_is_neither_ring_nor_mesh() -> None:
    chain = "\n".join(ln for ln in ring(4).splitlines() if "10.20.6." not in ln and
                      "10.20.7." not in ln) + "\n"
    out = refused(chain)
    assert "fabric.links: the cables form neither a ring" in out
    assert "NCCL's RDMA cannot be routed through a node" in out


def test_mesh_needs_every_pair() -> None:
    out = refused(ring(4, extra="  topology: mesh\n"))
    assert "fabric.topology: mesh means every pair of nodes is cabled" in out


def test_ring_without_links_and_links_on_a_switch() -> None:
    assert "fabric.topology: a ring needs fabric.links" in refused(
        nodes(3) + "fabric: {topology: ring}\n")
    out = refused(ring(3, extra="  topology: switch\n").replace(
        "fabric_ip: 10.0.0.", "rail_ips: [192.168.100.9], fabric_ip: 10.0.0."))
    assert "fabric.links: links describe the cables of a ring or mesh" in out


def test_fabric_ip_must_reach_every_node_on_a_ring() -> None:
    out = refused(ring(3).replace("{name: s2, host: 10.0.0.2, fabric_ip: 10.0.0.2}",
                                  "{name: s2, host: 10.0.0.2, fabric_ip: 10.20.0.12}"))
    assert "nodes[1].fabric_ip: 10.20.0.12 is the address of fabric.links[0].ends[1]" in out
    assert "fabric_ip is the node's management address (on enP7s7)" in out


def test_rail_addresses_on_a_ring_are_refused() -> None:
    out = refused(ring(3).replace("fabric_ip: 10.0.0.1}", "fabric_ip: 10.0.0.1, rail_ips: [10.0.0.1]}"))
    assert "nodes[0].rail_ips: on a mesh the addresses of the fabric interfaces come from " \
           "fabric.links" in out


def test_two_cables_on_one_subnet_and_mixed_prefix_lengths() -> None:
    shared = ring(3).replace("10.20.2.0/24", "10.20.0.0/24").replace("10.20.2.12", "10.20.0.22") \
        .replace("10.20.2.13", "10.20.0.23")
    assert "fabric.links[2].subnet: 10.20.0.0/24 overlaps fabric.links[0]'s 10.20.0.0/24, " \
           "which joins s1, s2" in refused(shared)
    mixed = ring(3).replace("10.20.5.0/24", "10.20.5.0/25")
    assert "fabric.links: the links' subnets have prefix lengths /24, /25: use one" in refused(mixed)


def test_the_twins_of_one_cable_may_share_a_subnet() -> None:
    """NVIDIA's connect-three-sparks addresses both twins of a port in one /24."""
    text = ring(3).replace("10.20.1.0/24", "10.20.0.0/24").replace("10.20.1.11", "10.20.0.21") \
        .replace("10.20.1.12", "10.20.0.22")
    assert topology.of(load(text)).kind == "mesh"


def test_one_interface_one_cable() -> None:
    out = refused(ring(3).replace("{node: s1, interface: enP2p1s0f0np0",
                                  "{node: s1, interface: enp1s0f0np0"))
    assert "fabric.links[1].ends[0].interface: s1's enp1s0f0np0 is already an end of " \
           "fabric.links[0]" in out


def test_rails_off_their_subnet_switch_and_ambiguous() -> None:
    two = nodes(2).replace("192.168.100.2, rail_ips: [192.168.100.2", "192.168.102.2, "
                           "rail_ips: [192.168.102.2")
    assert ("nodes[1].rail_ips[0]: 192.168.102.2 is not in 192.168.100.0/24, the subnet every "
            "node's rail 0 shares (s1 192.168.100.1)") in refused(two)
    three = nodes(3).replace("192.168.100.3, rail_ips: [192.168.100.3", "192.168.102.3, "
                             "rail_ips: [192.168.102.3")
    out = refused(three)
    assert "nodes[2].rail_ips[0]: 192.168.102.3 is not in 192.168.100.0/24" in out
    assert "cannot tell the topology" in out and "describe each cable in fabric.links" in out
    wide = three + "fabric: {prefix_length: 16}\n"
    assert topology.of(load(wide)).kind == "switch"


def test_direct_means_two_nodes_and_per_node_rails_count() -> None:
    assert "fabric.topology: direct means two nodes" in refused(
        nodes(3) + "fabric: {topology: direct}\n")
    out = refused(nodes(2).replace("rail_ips: [192.168.100.2, 192.168.101.2]}",
                                   "rail_ips: [192.168.100.2, 192.168.101.2], "
                                   "rails: [{interface: enp1s0f0np0}]}"))
    assert "nodes[1].rail_ips: has 2 address(es) but nodes[1].rails has 1" in out
