"""verify-ib's pure checks: facts (parsed from real captures, then edited per case) in,
PASS/WARN/FAIL with evidence and fix out."""

from __future__ import annotations

from dataclasses import replace
from ipaddress import IPv4Interface
from pathlib import Path
from typing import Any

import pytest

from dgxcluster.core.containerenv import IFNAME_VARS, container_env
from dgxcluster.facts import ethtool, ibdev2netdev, ibv_devinfo, nvidia_smi
from dgxcluster.facts import ping as ping_fact
from dgxcluster.facts.ipaddr import Interface
from dgxcluster.inventory import parse_inventory
from dgxcluster.inventory.load import Inventory
from dgxcluster.verify.cluster_checks import cluster_checks
from dgxcluster.verify.env_checks import container_checks, env_checks, nccl_matches
from dgxcluster.verify.gather import Fact, NodeFacts
from dgxcluster.verify.node_checks import node_checks
from dgxcluster.verify.results import CheckResult, Level

REAL = Path(__file__).resolve().parents[1] / "fixtures" / "real"
PORT1 = "ibv_devinfo_dgx_spark_port1_up_port0_down_mtu9000_invocarem_spark1.txt"
ALL4 = "ibv_devinfo_dgx_spark_all4_active_mtu1500_elizabetht.txt"
IBDEV = "ibdev2netdev_dgx_spark_all_up_two_cables_playbook.txt"
SMI = "nvidia-smi_gb10_with_processes_obrienlabs.txt"

TWO = """\
cluster: spark
nodes:
  - {name: spark1, host: s1, fabric_ip: 192.168.100.10, rail_ips: [192.168.100.10, 192.168.101.10]}
  - {name: spark2, host: s2, fabric_ip: 192.168.100.11, rail_ips: [192.168.100.11, 192.168.101.11]}
"""


def real(name: str) -> str:
    return (REAL / name).read_text().partition("\n")[2]


def inv(extra: str = "", base: str = TWO) -> Inventory:
    return parse_inventory(base + extra, environ={})


def spark(i: int = 0, *, devinfo: str = PORT1, mtu: int = 9000, speed: int | None = 200000,
          states: dict[str, bool] | None = None, **kw: Any) -> NodeFacts:
    """A DGX Spark's facts as read from real captures: QSFP port 1 cabled, MTU 9000."""
    info = ibv_devinfo.parse(real(devinfo))
    for d in info.devices:
        if states and d.name in states:
            d.ports[0].state = "PORT_ACTIVE" if states[d.name] else "PORT_DOWN"
            d.ports[0].active_mtu = 4096 if states[d.name] else 1024
    name = f"spark{i + 1}"
    ifaces = {
        "lo": Interface("lo", 65536, "UNKNOWN", ["LOOPBACK", "UP", "LOWER_UP"],
                        [IPv4Interface("127.0.0.1/8")]),
        "enP7s7": Interface("enP7s7", 1500, "UP", ["UP"], [IPv4Interface(f"10.0.0.{i + 10}/24")]),
        "enp1s0f1np1": Interface("enp1s0f1np1", mtu, "UP", ["UP"],
                                 [IPv4Interface(f"192.168.100.{i + 10}/24")]),
        "enP2p1s0f1np1": Interface("enP2p1s0f1np1", mtu, "UP", ["UP"],
                                   [IPv4Interface(f"192.168.101.{i + 10}/24")]),
    }
    f = NodeFacts(name, devinfo=Fact(info), links=Fact(ibdev2netdev.parse(real(IBDEV))),
                  ifaces=Fact(ifaces), smi=Fact(nvidia_smi.parse(real(SMI))))
    text = f"Speed: {speed}Mb/s" if speed else "Speed: Unknown!"
    f.speeds = {n: Fact(ethtool.parse(f"Settings for {n}:\n\t{text}\n"))
                for n in ("enp1s0f1np1", "enP2p1s0f1np1")}
    peer = "spark2" if i == 0 else "spark1"
    ok = ping_fact.PingResult(2, 2, 0.1)
    f.pings = {(peer, 0): Fact(ok), (peer, 1): Fact(ok)}
    for k, v in kw.items():
        setattr(f, k, v)
    return f


def run(i: Inventory, f: NodeFacts) -> dict[str, CheckResult]:
    spec = i.node(f.node)
    res = node_checks(i, spec, f) + env_checks(i, spec, f, container_env(i, f.node))
    return {r.check: r for r in res}


def not_passing(res: dict[str, CheckResult]) -> dict[str, Level]:
    return {k: r.status for k, r in res.items() if r.status != Level.PASS}


def test_healthy_spark_passes_everything() -> None:
    res = run(inv(), spark())
    assert not_passing(res) == {}
    assert list(res) == ["rdma-devices", "rdma-ports", "twins", "interfaces", "addresses", "mtu",
                         "link-speed", "gpu", "ping", "nccl-ifname", "nccl-ib-hca", "nccl-gid",
                         "host-ip"]
    assert "rocep1s0f1 (enp1s0f1np1) ACTIVE mtu 4096" in res["rdma-devices"].detail
    assert "firmware 28.45.4028" in res["rdma-devices"].detail
    assert res["gpu"].detail == "NVIDIA GB10; driver 580.95.05, CUDA 13.0"
    assert all(r.to_json()["fix"] == "" for r in res.values())


def test_only_one_twin_in_rails() -> None:
    one = inv("fabric:\n  rails: [{interface: enp1s0f1np1, rdma_device: rocep1s0f1}]\n",
              base=TWO.replace(", rail_ips: [192.168.100.10, 192.168.101.10]", "")
              .replace(", rail_ips: [192.168.100.11, 192.168.101.11]", ""))
    res = run(one, spark())
    assert res["twins"].status == Level.FAIL
    assert "roceP2p1s0f1 (enP2p1s0f1np1, port 1)" in res["twins"].detail
    assert "add every twin" in res["twins"].fix


def test_cable_in_port0_says_where_it_is() -> None:
    res = run(inv(), spark(states={"rocep1s0f0": True, "roceP2p1s0f0": True,
                                   "rocep1s0f1": False, "roceP2p1s0f1": False}))
    ports = res["rdma-ports"]
    assert ports.status == Level.FAIL
    assert "rocep1s0f1 (enp1s0f1np1) is PORT_DOWN" in ports.detail
    assert "port 0 (enp1s0f0np0/rocep1s0f0, enP2p1s0f0np0/roceP2p1s0f0 active)" in ports.fix
    assert res["nccl-ib-hca"].status == Level.FAIL  # matches nothing active -> sockets
    assert "falls back to TCP sockets" in res["nccl-ib-hca"].detail


def test_rails_pairing_wrong_device() -> None:
    swapped = inv("fabric:\n  rails:\n    - {interface: enp1s0f1np1, rdma_device: roceP2p1s0f1}\n"
                  "    - {interface: enP2p1s0f1np1, rdma_device: rocep1s0f1}\n")
    res = run(swapped, spark())
    assert res["rdma-ports"].status == Level.FAIL
    assert "roceP2p1s0f1 is the RDMA side of enP2p1s0f1np1, but fabric.rails pairs it with " \
           "enp1s0f1np1" in res["rdma-ports"].detail


def test_sysfs_fallback_when_tools_missing() -> None:
    links, ports = ibdev2netdev.parse_sysfs(
        "net rocep1s0f1 enp1s0f1np1\nport rocep1s0f1 1 4 ACTIVE Ethernet\n"
        "net roceP2p1s0f1 enP2p1s0f1np1\nport roceP2p1s0f1 1 4 ACTIVE Ethernet\nsysfs-done\n")
    f = spark(devinfo=PORT1)
    f.devinfo = Fact(missing=True, error="sh: 1: exec: ibv_devinfo: not found")
    f.links, f.sysfs_ports, f.sysfs_read, f.links_source = Fact(links), ports, True, "sysfs"
    res = run(inv(), f)
    assert res["rdma-devices"].status == Level.WARN
    assert "2 device(s) from sysfs" in res["rdma-devices"].detail
    assert "ibverbs-utils" in res["rdma-devices"].fix
    assert res["rdma-ports"].status == Level.PASS and res["twins"].status == Level.PASS


def test_no_rdma_at_all() -> None:
    f = spark()
    f.devinfo = Fact(missing=True, error="not found")
    f.links = Fact(missing=True, error="not found")
    f.sysfs_read, f.sysfs_ports = True, []
    res = run(inv(), f)
    for check in ("rdma-devices", "rdma-ports", "twins", "nccl-ib-hca"):
        assert res[check].status == Level.FAIL, check
    assert res["rdma-devices"].detail.startswith("no RDMA devices: ibv_devinfo is not installed")
    assert "scripts/testbed simhw" in res["rdma-devices"].fix
    said = spark(devinfo=PORT1)
    said.devinfo = Fact(ibv_devinfo.parse("No IB devices found\n"))
    assert "'No IB devices found'" in run(inv(), said)["rdma-devices"].detail


def test_garbled_ibv_devinfo_is_reported_not_raised() -> None:
    f = spark()
    f.devinfo = Fact(error="could not parse ibv_devinfo output: no 'hca_id:' device block")
    f.links = Fact([])
    res = run(inv(), f)
    assert res["rdma-devices"].status == Level.FAIL
    assert "could not parse ibv_devinfo" in res["rdma-devices"].detail


def test_link_speed_100g_unknown_and_missing_ethtool() -> None:
    res = run(inv(), spark(speed=100000))
    assert res["link-speed"].status == Level.FAIL
    assert "enp1s0f1np1: 100000Mb/s, expected 200000Mb/s" in res["link-speed"].detail
    assert "fell back" in res["link-speed"].fix
    assert "no link" in run(inv(), spark(speed=None))["link-speed"].detail
    f = spark()
    f.speeds = {k: Fact(missing=True) for k in f.speeds}
    assert run(inv(), f)["link-speed"].status == Level.WARN


def test_mtu_and_roce_active_mtu() -> None:
    res = run(inv(), spark(mtu=1500))
    assert res["mtu"].status == Level.FAIL
    assert "enp1s0f1np1 mtu 1500, expected at least 9000" in res["mtu"].detail
    low = run(inv(), spark(devinfo=ALL4))  # all ports up with RoCE MTU 1024
    assert low["mtu"].status == Level.WARN and "active_mtu 1024" in low["mtu"].detail


def test_interfaces_missing_down_and_address_elsewhere() -> None:
    f = spark()
    ifaces = dict(f.ifaces.value or {})
    del ifaces["enP2p1s0f1np1"]
    ifaces["enp1s0f1np1"] = replace(ifaces["enp1s0f1np1"], operstate="DOWN", ipv4=[])
    ifaces["enP7s7"] = replace(ifaces["enP7s7"], ipv4=[IPv4Interface("192.168.100.10/24")])
    f.ifaces = Fact(ifaces)
    res = run(inv(), f)
    assert "enP2p1s0f1np1 does not exist" in res["interfaces"].detail
    assert "enp1s0f1np1 is DOWN" in res["interfaces"].detail
    assert "192.168.100.10 is on enP7s7" in res["addresses"].detail
    host = res["host-ip"]
    assert host.status == Level.FAIL and "is on enP7s7, not a fabric interface" in host.detail


def test_unreadable_interfaces() -> None:
    f = spark()
    f.ifaces = Fact(error="could not parse ip -j addr show output: not JSON")
    res = run(inv(), f)
    for check in ("interfaces", "addresses", "mtu", "nccl-ifname", "host-ip"):
        assert res[check].status == Level.FAIL, check


def test_ping_too_big_and_no_reply() -> None:
    f = spark()
    f.pings = {("spark2", 0): Fact(ping_fact.PingResult(2, 0, None, 1500)),
               ("spark2", 1): Fact(ping_fact.PingResult(2, 0))}
    p = run(inv(), f)["ping"]
    assert p.status == Level.FAIL
    assert "spark2 192.168.100.11 via enp1s0f1np1: 8972-byte packet too big (mtu 1500)" in p.detail
    assert "spark2 192.168.101.11 via enP2p1s0f1np1: 0/2 replies" in p.detail
    assert "MTU 9000" in p.fix


@pytest.mark.parametrize(("env", "status", "text"), [
    ("NCCL_IB_HCA: mlx5", Level.FAIL, "matches no active RDMA device"),
    ("NCCL_IB_HCA: '=rocep1s0f1'", Level.FAIL, "leaves out active twin(s) roceP2p1s0f1"),
    ("NCCL_IB_HCA: '^rocep1s0f0,roceP2p1s0f0'", Level.PASS, "selects rocep1s0f1, roceP2p1s0f1"),
    ("NCCL_IB_HCA: roce", Level.PASS, "selects rocep1s0f1, roceP2p1s0f1"),
    ("NCCL_IB_DISABLE: '1'", Level.FAIL, "NCCL will use TCP sockets"),
])
def test_nccl_ib_hca_semantics(env: str, status: Level, text: str) -> None:
    res = run(inv(f"fabric:\n  nccl_env: {{{env}}}\n"), spark())["nccl-ib-hca"]
    assert res.status == status and text in res.detail


def test_nccl_matches() -> None:
    names = ["rocep1s0f0", "rocep1s0f1", "roceP2p1s0f1", "mlx5_0"]
    assert nccl_matches("rocep1s0f1:1,roceP2p1s0f1:1", names) == ["rocep1s0f1", "roceP2p1s0f1"]
    assert nccl_matches("=rocep1s0", names) == []
    assert nccl_matches("rocep1s0", names) == ["rocep1s0f0", "rocep1s0f1"]
    assert nccl_matches("^=mlx5_0", names) == names[:3]


@pytest.mark.parametrize(("env", "status", "text"), [
    ("NCCL_SOCKET_IFNAME: eth9", Level.FAIL, "NCCL_SOCKET_IFNAME=eth9 names no interface"),
    ("GLOO_SOCKET_IFNAME: enP7s7", Level.WARN, "selects enP7s7, not a fabric interface"),
    ("UCX_NET_DEVICES: 'rocep1s0f0:1'", Level.FAIL, "rocep1s0f0:1 is not an active RDMA device"),
    ("UCX_NET_DEVICES: 'rocep1s0f1:1,enp1s0f1np1'", Level.PASS, "UCX_NET_DEVICES="),
    ("NCCL_SOCKET_IFNAME: '^docker,lo'", Level.PASS, "NCCL_SOCKET_IFNAME=^docker,lo"),
    # Open MPI's TCP transport: interface names and/or CIDR networks, checked like the others
    ("OMPI_MCA_btl_tcp_if_include: eth9", Level.FAIL,
     "OMPI_MCA_btl_tcp_if_include=eth9 names no interface"),
    ("OMPI_MCA_btl_tcp_if_include: 192.168.100.0/24", Level.PASS,
     "OMPI_MCA_btl_tcp_if_include=192.168.100.0/24"),
    ("OMPI_MCA_btl_tcp_if_include: 10.99.0.0/16", Level.FAIL, "names no interface"),
])
def test_socket_ifname_variables(env: str, status: Level, text: str) -> None:
    res = run(inv(f"container:\n  env: {{{env}}}\n"), spark())["nccl-ifname"]
    assert res.status == status and text in res.detail


def test_host_ip_override_and_link_local() -> None:
    res = run(inv("container:\n  env: {VLLM_HOST_IP: 192.168.100.10}\n"), spark(1))["host-ip"]
    assert res.status == Level.FAIL and "differ from the node's fabric_ip 192.168.100.11" in res.detail
    ll = TWO.replace("192.168.100.10", "169.254.1.10").replace("192.168.101.10", "169.254.2.10")
    f = spark()
    ifaces = dict(f.ifaces.value or {})
    ifaces["enp1s0f1np1"] = replace(ifaces["enp1s0f1np1"], ipv4=[IPv4Interface("169.254.1.10/16")])
    f.ifaces = Fact(ifaces)
    assert run(inv(base=ll), f)["host-ip"].status == Level.WARN


@pytest.mark.parametrize(("extra", "status", "text"), [
    ("", Level.PASS, "devices /dev/infiniband, memlock -1"),
    ("container: {devices: []}\n", Level.FAIL, "lacks /dev/infiniband"),
    ("container: {ulimits: {}}\n", Level.FAIL, "memlock ulimit is unset"),
    ("container: {ulimits: {memlock: '65536'}}\n", Level.FAIL, "memlock ulimit is 65536"),
    ("container: {devices: [], extra_args: [--privileged]}\n", Level.PASS, "(privileged)"),
    ("container: {cap_add: []}\n", Level.WARN, "lacks IPC_LOCK"),
    ("container: {network: bridge}\n", Level.FAIL, "container.network is bridge"),
    ("container: {devices: ['/dev/infiniband/uverbs0:/dev/infiniband/uverbs0'],"
     " ulimits: {memlock: '-1:-1'}}\n", Level.PASS, "uverbs0"),
])
def test_container_options(extra: str, status: Level, text: str) -> None:
    (r,) = container_checks(inv(extra))
    assert r.node == "cluster" and r.check == "container-rdma"
    assert r.status == status and text in r.detail


def _cluster(i: Inventory, a: NodeFacts, b: NodeFacts) -> dict[str, CheckResult]:
    return {r.check: r for r in cluster_checks(i, i.nodes, {a.node: a, b.node: b})}


def test_cluster_checks_healthy() -> None:
    res = _cluster(inv(), spark(0), spark(1))
    assert {k: r.status for k, r in res.items()} == {
        "fabric-ips-unique": Level.PASS, "rail-subnets": Level.PASS, "mtu-match": Level.PASS,
        "cabling": Level.PASS}
    assert res["rail-subnets"].detail == "rail 0 192.168.100.0/24, rail 1 192.168.101.0/24"


def test_cluster_mtu_mismatch_and_cabling_on_different_ports() -> None:
    port0 = {"rocep1s0f0": True, "roceP2p1s0f0": True, "rocep1s0f1": False, "roceP2p1s0f1": False}
    res = _cluster(inv(), spark(0), spark(1, mtu=1500, states=port0))
    assert res["mtu-match"].status == Level.FAIL
    assert "spark1 9000, spark2 1500" in res["mtu-match"].detail
    assert res["cabling"].status == Level.FAIL
    assert "not cabled on port 1: spark2 (active ports: spark1: port 1; spark2: port 0)" \
        in res["cabling"].detail


def test_cluster_ring_node_with_both_ports_is_fine() -> None:
    res = _cluster(inv(), spark(0, devinfo=ALL4), spark(1))
    assert res["cabling"].status == Level.PASS


def test_cluster_subnets() -> None:
    split = TWO.replace("fabric_ip: 192.168.100.11, rail_ips: [192.168.100.11",
                        "fabric_ip: 192.168.102.11, rail_ips: [192.168.102.11")
    res = _cluster(inv(base=split), spark(0), spark(1))
    assert res["rail-subnets"].status == Level.FAIL
    assert "rail 0 (enp1s0f1np1)" in res["rail-subnets"].detail
    same = TWO.replace("192.168.101.", "192.168.100.1")
    shared = _cluster(inv(base=same), spark(0), spark(1))["rail-subnets"]
    assert shared.status == Level.WARN and "rails 0 and 1 share 192.168.100.0/24" in shared.detail


def test_duplicate_rail_ips() -> None:
    dup = TWO.replace("192.168.101.11]", "192.168.101.10]")
    res = _cluster(inv(base=dup), spark(0), spark(1))
    assert res["fabric-ips-unique"].status == Level.FAIL
    assert "192.168.101.10 (spark1 rail 1 and spark2 rail 1)" in res["fabric-ips-unique"].detail


# -- checks an expert judges differently (issue 13) ---------------------------------------------

PORT0_CABLED = {"rocep1s0f0": True, "roceP2p1s0f0": True, "rocep1s0f1": False,
                "roceP2p1s0f1": False}


def test_twins_do_not_pass_when_the_configured_twins_are_down() -> None:
    res = run(inv(), spark(states=PORT0_CABLED))
    twins = res["twins"]
    assert twins.status == Level.FAIL, twins
    assert "rocep1s0f1 DOWN, roceP2p1s0f1 DOWN" in twins.detail
    assert "the cable is in port 0 (enp1s0f0np0/rocep1s0f0, enP2p1s0f0np0/roceP2p1s0f0)" \
        in twins.detail
    assert "move the cable" in twins.fix
    healthy = run(inv(), spark())["twins"]
    assert healthy.status == Level.PASS and "rocep1s0f1 ACTIVE, roceP2p1s0f1 ACTIVE" in healthy.detail


def test_twins_down_with_no_cable_anywhere() -> None:
    down = dict.fromkeys(PORT0_CABLED, False)
    twins = run(inv(), spark(states=down))["twins"]
    assert twins.status == Level.FAIL and "no twin of fabric.rails is active" in twins.detail
    assert "cable is in" not in twins.detail and "QSFP cable" in twins.fix


def test_jumbo_mtu_above_the_expected_passes_and_below_fails() -> None:
    res = run(inv(), spark(mtu=9216))  # a common switch/jumbo setting over fabric.mtu 9000
    assert res["mtu"].status == Level.PASS
    assert "enp1s0f1np1 mtu 9216 (>= 9000)" in res["mtu"].detail
    low = run(inv(), spark(mtu=8999))
    assert low["mtu"].status == Level.FAIL and "mtu 8999, expected at least 9000" in low["mtu"].detail


def test_cluster_mtu_differing_but_all_jumbo_only_warns() -> None:
    res = _cluster(inv(), spark(0, mtu=9216), spark(1, mtu=9000))
    assert res["mtu-match"].status == Level.WARN
    assert "spark1 9216" in res["mtu-match"].detail and "spark2 9000" in res["mtu-match"].detail


def _no_ipv4_on_second_twin(f: NodeFacts, problem: str | None = None) -> NodeFacts:
    ifaces = dict(f.ifaces.value or {})
    ifaces["enP2p1s0f1np1"] = replace(ifaces["enP2p1s0f1np1"], ipv4=[],
                                      problems=[problem] if problem else [])
    f.ifaces = Fact(ifaces)
    return f


ONE_ADDRESS = TWO.replace(", rail_ips: [192.168.100.10, 192.168.101.10]", "").replace(
    ", rail_ips: [192.168.100.11, 192.168.101.11]", "")


def test_twin_without_ipv4_fails_with_gid_index_3() -> None:
    # rail_ips not given: the addresses check has nothing to compare on rail 1 and passes,
    # but NCCL_IB_GID_INDEX=3 (RoCE v2 IPv4 GID) does not exist on an unaddressed twin.
    res = run(inv(base=ONE_ADDRESS), _no_ipv4_on_second_twin(spark()))
    assert res["addresses"].status == Level.PASS
    gid = res["nccl-gid"]
    assert gid.status == Level.FAIL, gid
    assert "NCCL_IB_GID_INDEX=3 is the RoCE v2 IPv4 GID" in gid.detail
    assert "roceP2p1s0f1 (enP2p1s0f1np1 has no IPv4 address)" in gid.detail
    assert "netplan" in gid.fix
    ok = run(inv(base=ONE_ADDRESS), spark())["nccl-gid"]
    assert ok.status == Level.PASS and "roceP2p1s0f1 (enP2p1s0f1np1 192.168.101.10)" in ok.detail


def test_gid_check_follows_the_gid_index() -> None:
    other = inv("fabric: {nccl_ib_gid_index: 1}\n", base=ONE_ADDRESS)
    assert "nccl-gid" not in run(other, _no_ipv4_on_second_twin(spark()))
    unset = inv("fabric: {nccl_ib_gid_index: null}\n", base=ONE_ADDRESS)
    assert "nccl-gid" not in run(unset, _no_ipv4_on_second_twin(spark()))


def test_unreadable_address_line_is_reported_as_a_parse_problem() -> None:
    problem = "unreadable IPv4 address line 'inet 192.168.101.300/24 scope global'"
    res = run(inv(), _no_ipv4_on_second_twin(spark(), problem))
    addr = res["addresses"]
    assert addr.status == Level.FAIL
    assert problem in addr.detail and "parse problem" in addr.detail
    assert problem in res["nccl-gid"].detail


def test_every_interface_variable_start_sets_is_checked() -> None:
    """One list: what `container_env` derives from the fabric interface is what verify-ib
    checks (Open MPI's variable was missing from verify-ib's own copy of the list)."""
    detail = run(inv(""), spark())["nccl-ifname"].detail
    assert all(f"{var}=enp1s0f1np1" in detail for var in IFNAME_VARS), detail
