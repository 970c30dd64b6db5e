"""The twin/port view of a DGX Spark's RDMA devices (names as the real CX-7 shows them)."""

from __future__ import annotations

from dgxcluster.verify.rdma import RdmaDev, by_port, cabled_ports, port_key


def test_twins_share_the_physical_port_of_their_net_device() -> None:
    assert port_key("rocep1s0f1", "enp1s0f1np1") == "port 1"
    assert port_key("roceP2p1s0f1", "enP2p1s0f1np1") == "port 1"
    assert port_key("rocep1s0f0", None) == "port 0"  # the RDMA name's f<N> without a netdev
    assert port_key("mlx5_0", None) is None


def test_ports_group_twins_and_only_active_ones_count_as_cabled() -> None:
    devs = {d.name: d for d in (
        RdmaDev("rocep1s0f1", "ACTIVE", 4096, "Ethernet", "enp1s0f1np1"),
        RdmaDev("roceP2p1s0f1", "ACTIVE", 4096, "Ethernet", "enP2p1s0f1np1"),
        RdmaDev("rocep1s0f0", "DOWN", None, "Ethernet", "enp1s0f0np0"),
        RdmaDev("mlx5_9", "ACTIVE"),
    )}
    groups = by_port(devs)
    assert sorted(groups) == ["port 0", "port 1"]
    assert [d.name for d in groups["port 1"]] == ["rocep1s0f1", "roceP2p1s0f1"]
    assert cabled_ports(devs) == ["port 1"]
    assert devs["rocep1s0f1"].label() == "rocep1s0f1 (enp1s0f1np1) ACTIVE mtu 4096"
    assert devs["rocep1s0f0"].label() == "rocep1s0f0 (enp1s0f0np0) DOWN"
