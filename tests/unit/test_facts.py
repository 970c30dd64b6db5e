"""Every fact parser on every capture it reads, plus variants of the format and garbage.

Fixtures in tests/fixtures/real come from DGX Sparks (first line: the source), those in
tests/fixtures/captured from our own runs (2 H200s through the device tool; the testbed).
The source line is metadata, not tool output, so it is dropped before parsing.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from dgxcluster.facts import (
    ParseError,
    ethtool,
    ib_write_bw,
    ibdev2netdev,
    ibv_devinfo,
    ipaddr,
    nccl_log,
    nccl_tests,
    nvidia_smi,
    ping,
    ray_status,
)

REAL = Path(__file__).resolve().parents[1] / "fixtures" / "real"
CAPTURED = Path(__file__).resolve().parents[1] / "fixtures" / "captured"
GARBAGE = ["", "\n\n", "Segmentation fault (core dumped)\n", "\x00\x01\x02 binary \xff",
           "<html><body>502 Bad Gateway</body></html>", "error: something: went: wrong\n"]


def body(path: Path) -> str:
    first, _, rest = path.read_text().partition("\n")
    assert first.startswith("# source:"), f"{path.name}: first line must name the source"
    return rest


# -- ibv_devinfo ------------------------------------------------------------------------------

def test_ibv_devinfo_port1_up_port0_down() -> None:
    info = ibv_devinfo.parse(
        body(REAL / "ibv_devinfo_dgx_spark_port1_up_port0_down_mtu9000_invocarem_spark1.txt"))
    assert info.names == ["rocep1s0f0", "rocep1s0f1", "roceP2p1s0f0", "roceP2p1s0f1"]
    states = {d.name: (d.ports[0].state, d.ports[0].active_mtu) for d in info.devices}
    assert states == {"rocep1s0f0": ("PORT_DOWN", 1024), "rocep1s0f1": ("PORT_ACTIVE", 4096),
                      "roceP2p1s0f0": ("PORT_DOWN", 1024), "roceP2p1s0f1": ("PORT_ACTIVE", 4096)}
    d = info.get("rocep1s0f1")
    assert d is not None and d.fw_ver == "28.45.4028" and d.transport == "InfiniBand (0)"
    assert d.ports[0].link_layer == "Ethernet" and d.ports[0].max_mtu == 4096
    assert d.vendor_part_id == "4129" and d.board_id == "NVD0000000087"


def test_ibv_devinfo_all_active_mtu1500() -> None:
    info = ibv_devinfo.parse(body(REAL / "ibv_devinfo_dgx_spark_all4_active_mtu1500_elizabetht.txt"))
    assert len(info.devices) == 4
    assert all(d.active and d.ports[0].active_mtu == 1024 for d in info.devices)


def test_ibv_devinfo_spaces_instead_of_tabs_and_two_ports() -> None:
    text = ("hca_id: mlx5_0\n  transport: InfiniBand (0)\n  fw_ver: 20.31.1014\n"
            "  phys_port_cnt: 2\n    port: 1\n      state: PORT_ACTIVE (4)\n"
            "      active_mtu: 4096 (5)\n      link_layer: InfiniBand\n"
            "    port: 2\n      state: PORT_INIT (2)\n      active_mtu: 4096 (5)\n"
            "      link_layer: InfiniBand\n      GID[  0]: fe80:0000:0000:0000:0000:0000:0000:0001\n")
    info = ibv_devinfo.parse(text)
    (d,) = info.devices
    assert [(p.number, p.state) for p in d.ports] == [(1, "PORT_ACTIVE"), (2, "PORT_INIT")]
    assert d.port(2) is not None and d.port(2).link_layer == "InfiniBand"  # type: ignore[union-attr]


@pytest.mark.parametrize("text", ["No IB devices found\n",
                                  "Failed to get IB devices list: Function not implemented\n"])
def test_ibv_devinfo_no_devices_is_empty_not_error(text: str) -> None:
    info = ibv_devinfo.parse(text)
    assert info.devices == [] and info.message == text.strip()


@pytest.mark.parametrize("text", GARBAGE + ["hca_id:\trocep1s0f0\n\ttransport:\tInfiniBand\n",
                                            "hca_id:\tx\n\t\tport:\tone\n"])
def test_ibv_devinfo_garbage(text: str) -> None:
    with pytest.raises(ParseError, match="could not parse ibv_devinfo output"):
        ibv_devinfo.parse(text)


# -- ibdev2netdev and sysfs --------------------------------------------------------------------

def test_ibdev2netdev_port1_up() -> None:
    links = ibdev2netdev.parse(body(REAL / "ibdev2netdev_dgx_spark_port1_up_playbook.txt"))
    assert [(ln.device, ln.netdev, ln.state) for ln in links] == [
        ("roceP2p1s0f0", "enP2p1s0f0np0", "Down"), ("roceP2p1s0f1", "enP2p1s0f1np1", "Up"),
        ("rocep1s0f0", "enp1s0f0np0", "Down"), ("rocep1s0f1", "enp1s0f1np1", "Up")]


def test_ibdev2netdev_two_cables() -> None:
    links = ibdev2netdev.parse(body(REAL / "ibdev2netdev_dgx_spark_all_up_two_cables_playbook.txt"))
    assert len(links) == 4 and {ln.state for ln in links} == {"Up"}
    assert ibdev2netdev.netdev_of(links, "roceP2p1s0f0") == "enP2p1s0f0np0"


@pytest.mark.parametrize(("name", "up"), [
    ("ibdev2netdev_dgx_spark_switch_port1_up_multi_sparks_playbook.txt", {"rocep1s0f1", "roceP2p1s0f1"}),
    ("ibdev2netdev_dgx_spark_port0_up_perf_guide_playbook.txt", {"rocep1s0f0", "roceP2p1s0f0"}),
])
def test_ibdev2netdev_switch_and_port0_captures(name: str, up: set[str]) -> None:
    links = ibdev2netdev.parse(body(REAL / name))
    assert len(links) == 4 and {ln.device for ln in links if ln.state == "Up"} == up
    assert ibdev2netdev.netdev_of(links, "roceP2p1s0f0") == "enP2p1s0f0np0"


def test_ibdev2netdev_verbose_and_no_netdev() -> None:
    text = ("0000:01:00.0 mlx5_0 (MT4129 - MCX75310AAS-NEAT) ConnectX-7 fw 28.39.1002 port 1 "
            "(ACTIVE) ==> ens1f0np0 (Up)\nmlx5_1 port 1 ==> (none) (Down)\n")
    links = ibdev2netdev.parse(text)
    assert links[0] == ibdev2netdev.Link("mlx5_0", 1, "ens1f0np0", "Up")
    assert links[1].netdev is None


def test_ibdev2netdev_empty_means_no_devices() -> None:
    assert ibdev2netdev.parse("") == []


@pytest.mark.parametrize("text", GARBAGE[2:])
def test_ibdev2netdev_garbage(text: str) -> None:
    with pytest.raises(ParseError, match="could not parse ibdev2netdev output"):
        ibdev2netdev.parse(text)


def test_sysfs_listing() -> None:
    text = ("net rocep1s0f1 enp1s0f1np1\nport rocep1s0f1 1 4 ACTIVE Ethernet\n"
            "net roceP2p1s0f1 enP2p1s0f1np1\nport roceP2p1s0f1 1 1 DOWN Ethernet\nsysfs-done\n")
    links, ports = ibdev2netdev.parse_sysfs(text)
    assert [(ln.device, ln.netdev) for ln in links] == [("rocep1s0f1", "enp1s0f1np1"),
                                                       ("roceP2p1s0f1", "enP2p1s0f1np1")]
    assert [(p.device, p.state, p.link_layer) for p in ports] == [
        ("rocep1s0f1", "ACTIVE", "Ethernet"), ("roceP2p1s0f1", "DOWN", "Ethernet")]
    assert ibdev2netdev.parse_sysfs("sysfs-done\n") == ([], [])
    with pytest.raises(ParseError, match="could not parse"):
        ibdev2netdev.parse_sysfs("net a b\n")  # cut short


# -- ip ----------------------------------------------------------------------------------------

def test_ip_json_from_testbed() -> None:
    ifaces = ipaddr.parse(body(CAPTURED / "ip_j_addr_show_testbed.txt"))
    rail = ifaces["enp1s0f1np1"]
    assert rail.up and rail.mtu == 9000 and str(rail.ipv4[0]) == "10.211.5.11/24"
    assert ifaces["lo"].up  # operstate UNKNOWN, but UP and LOWER_UP
    assert ifaces["enP7s7"].mtu == 1500


def test_ip_text_forms() -> None:
    ifaces = ipaddr.parse_text(body(CAPTURED / "ip_addr_show_testbed.txt"))
    assert ifaces["enP2p1s0f1np1"].mtu == 9000 and ifaces["enP2p1s0f1np1"].up
    # The playbook capture wraps the address in markdown bold (**...**): a web-page artefact.
    real = body(REAL / "ip_addr_show_enp1s0f1np1_static_connect_two_sparks_playbook.txt")
    one = ipaddr.parse_text(real.replace("**", ""))["enp1s0f1np1"]
    assert one.mtu == 1500 and one.operstate == "UP" and str(one.ipv4[0]) == "192.168.100.10/24"


def test_ip_text_unreadable_address_is_a_problem_not_dropped() -> None:
    verbatim = body(REAL / "ip_addr_show_enp1s0f1np1_three_sparks_playbook.txt")
    rail = ipaddr.parse_text(verbatim)["enp1s0f1np1"]
    assert rail.ipv4 == [] and len(rail.problems) == 1
    assert "inet **192.168.1.1**/24" in rail.problems[0]
    clean = ipaddr.parse_text(verbatim.replace("**", ""))["enp1s0f1np1"]
    assert str(clean.ipv4[0]) == "192.168.1.1/24" and clean.problems == []
    bad = ipaddr.parse_text("4: x: <UP> mtu 9000 state UP\n    inet 10.0.0.300/24 scope global x\n")
    assert bad["x"].ipv4 == [] and "10.0.0.300/24" in bad["x"].problems[0]
    with pytest.raises(ParseError, match="address line before any interface"):
        ipaddr.parse_text("    inet 10.0.0.1/24 scope global x\n4: x: <UP> mtu 9000\n")


def test_ip_json_unreadable_address_is_a_problem() -> None:
    text = ('[{"ifname":"x","flags":["UP"],"mtu":9000,"operstate":"UP","addr_info":'
            '[{"family":"inet","local":"10.0.0.300","prefixlen":24},{"family":"inet"},'
            '{"family":"inet","local":"10.0.0.1","prefixlen":24}]}]')
    x = ipaddr.parse(text)["x"]
    assert [str(a) for a in x.ipv4] == ["10.0.0.1/24"] and len(x.problems) == 2


def test_ip_down_interface() -> None:
    text = '[{"ifname":"enp1s0f1np1","flags":["BROADCAST","MULTICAST","UP"],"mtu":9000,' \
           '"operstate":"DOWN","addr_info":[]}]'
    assert not ipaddr.parse(text)["enp1s0f1np1"].up


@pytest.mark.parametrize("text", GARBAGE + ['{"ifname": "x"}', '[{"mtu": 1}]', "Option \"-j\" is unknown"])
def test_ip_garbage(text: str) -> None:
    with pytest.raises(ParseError, match="could not parse ip -j addr show output"):
        ipaddr.parse(text)
    with pytest.raises(ParseError):
        ipaddr.parse_text(text)


# -- ethtool -----------------------------------------------------------------------------------

def test_ethtool_capture_100g_then_200g() -> None:
    text = body(REAL / "ethtool_speed_dgx_spark_multi_sparks_playbook.txt")
    blocks = [b for b in re.split(r"^\S+@\S+:.*\$ .*$", text, flags=re.M) if b.strip()]
    assert [ethtool.parse(b).speed_mbps for b in blocks] == [100000, 100000, 200000, 200000]


def test_ethtool_full_output_and_no_link() -> None:
    full = ("Settings for enp1s0f1np1:\n\tSupported ports: [ FIBRE ]\n\tSpeed: 200000Mb/s\n"
            "\tDuplex: Full\n\tAuto-negotiation: on\n\tLink detected: yes\n")
    s = ethtool.parse(full)
    assert (s.interface, s.speed_mbps, s.duplex, s.link_detected) == (
        "enp1s0f1np1", 200000, "Full", True)
    down = ethtool.parse("Settings for x:\n\tSpeed: Unknown!\n\tLink detected: no\n")
    assert down.speed_mbps is None and down.link_detected is False


def test_ethtool_missing_device() -> None:
    s = ethtool.parse("netlink error: no device matches name (offset 24)\n"
                      "netlink error: No such device\n")
    assert not s.exists


@pytest.mark.parametrize("text", GARBAGE + ["\tSpeed: fast\n"])
def test_ethtool_garbage(text: str) -> None:
    with pytest.raises(ParseError, match="could not parse ethtool output"):
        ethtool.parse(text)


# -- ping --------------------------------------------------------------------------------------

@pytest.mark.parametrize(("name", "ok", "rx", "too_big"), [
    ("ping_ok_jumbo_testbed.txt", True, 2, None),
    ("ping_no_reply_testbed.txt", False, 0, None),
    ("ping_local_mtu_too_small_testbed.txt", False, 0, 1500),
    ("ping_peer_mtu_too_small_testbed.txt", False, 0, None),
    ("ping_no_such_interface_testbed.txt", False, 0, None),
])
def test_ping_captures(name: str, ok: bool, rx: int, too_big: int | None) -> None:
    p = ping.parse(body(CAPTURED / name))
    assert (p.ok, p.received, p.too_big_mtu) == (ok, rx, too_big)


def test_ping_details() -> None:
    assert ping.parse(body(CAPTURED / "ping_ok_jumbo_testbed.txt")).rtt_avg_ms == 0.185
    assert "No such device" in (ping.parse(body(CAPTURED / "ping_no_such_interface_testbed.txt"))
                                .error or "")
    remote = ("From 10.0.0.1 icmp_seq=1 Frag needed and DF set (mtu = 1500)\n\n"
              "--- 10.0.0.2 ping statistics ---\n1 packets transmitted, 0 received, +1 errors\n")
    assert ping.parse(remote).too_big_mtu == 1500
    busybox = "3 packets transmitted, 3 packets received, 0% packet loss\n" \
              "round-trip min/avg/max = 0.1/0.2/0.3 ms\n"
    assert ping.parse(busybox).ok and ping.parse(busybox).rtt_avg_ms == 0.2
    assert ping.argv("10.0.0.2", "enp1s0f1np1", 9000)[:6] == ["ping", "-n", "-M", "do", "-s", "8972"]


@pytest.mark.parametrize("text", GARBAGE)
def test_ping_garbage(text: str) -> None:
    with pytest.raises(ParseError, match="could not parse ping output"):
        ping.parse(text)


# -- NCCL log ----------------------------------------------------------------------------------

def test_nccl_log_net_ib_over_both_twins() -> None:
    log = nccl_log.parse(body(REAL / "nccl_debug_NET_IB_init_dgx_spark_2node.log"))
    assert log.transport.kind == "NET/IB" and log.transport.rdma
    assert log.transport.evidence == "plugin"
    assert log.ib_devices == ["rocep1s0f1", "roceP2p1s0f1"]
    assert log.gdr_disabled and not log.gdr_used
    assert log.version == "2.28.9+cuda13.0"
    assert log.env["NCCL_SOCKET_IFNAME"] == "enp1s0f1np1"


def test_nccl_log_socket_fallback_abridged() -> None:
    log = nccl_log.parse(body(REAL / "nccl_debug_NET_Socket_fallback_ABRIDGED_dgx_spark.txt"))
    assert log.transport.kind == "NET/Socket" and log.transport.sockets
    assert log.transport.evidence == "channels"
    assert log.ib_init_failed and log.socket_ifaces == ["enp1s0f0np0"]
    assert log.env["NCCL_NET_PLUGIN"] == "none"


def test_nccl_log_h200_nvlink_is_p2p_despite_using_network_socket() -> None:
    log = nccl_log.parse(body(CAPTURED / "nccl_probe_h200x2_nvlink.txt"))
    assert "Socket" in log.networks  # NCCL loads a network plugin anyway ...
    assert log.transport.kind == "P2P"  # ... but every channel goes peer-to-peer
    assert set(log.via) == {"P2P/CUMEM"}
    assert log.ib_no_device and log.nnodes == 1


def test_nccl_log_h200_forced_sockets() -> None:
    log = nccl_log.parse(body(CAPTURED / "nccl_probe_h200x2_sockets.txt"))
    assert log.transport.kind == "NET/Socket"
    assert log.env["NCCL_P2P_DISABLE"] == "1" and log.env["NCCL_IB_DISABLE"] == "1"
    assert log.nnodes == 2  # SHM and P2P off: NCCL treats each rank as its own node


def test_nccl_log_gdr_and_shm() -> None:
    text = ("h:1:1 [0] NCCL INFO Channel 00/0 : 0[0] -> 1[0] [send] via NET/IB/0/GDRDMA\n"
            "h:1:1 [0] NCCL INFO Channel 00/0 : 0[0] -> 1[1] via SHM/direct/direct\n")
    log = nccl_log.parse(text)
    assert log.gdr_used and log.transport.kind == "NET/IB"
    assert nccl_log.parse("x NCCL INFO Channel 00 : 0[0] -> 1[1] via SHM/direct/direct\n"
                          ).transport.kind == "SHM"
    assert nccl_log.parse("x NCCL INFO Init START\n").transport.kind == "unknown"
    warn = nccl_log.parse("x NCCL WARN NET/IB : Got async event : port error\n")
    assert warn.warnings == ["NET/IB : Got async event : port error"]


IBEXT = "nccl_debug_IBext_v11_both_twins_ngc_vllm_26.03_dgx_spark_oshlabs.txt"


def test_nccl_log_ngc_ibext_plugin_is_rdma_over_both_twins() -> None:
    log = nccl_log.parse(body(REAL / IBEXT))
    t = log.transport
    assert t.kind == "NET/IB" and t.rdma and t.net == "IBext_v11" and t.evidence == "channels"
    assert "NCCL's external IB plugin IBext_v11" in t.detail  # the plugin name stays in the detail
    assert log.ib_devices == ["rocep1s0f0", "roceP2p1s0f0"]
    assert log.net_devices == [0, 1]  # channels alternate over both twins
    assert log.lines == 5  # the author stripped 'NCCL INFO': the lines are read all the same


def test_nccl_log_ibext_with_prefixes_and_one_rail() -> None:
    # Format of NCCL's net.cc channel lines with the plugin name nccl-rdma-sharp-plugins
    # registers (src/ib_plugin.c: .name = "IBext_v11"); only device 0 carries channels.
    text = ("spark1:10:20 [0] NCCL INFO NET/IB : Using [0]rocep1s0f1:1/RoCE [RO]; "
            "OOB enp1s0f1np1:10.0.0.1<0>\n"
            "spark1:10:20 [0] NCCL INFO Using network IBext_v11\n"
            "spark1:10:30 [0] NCCL INFO Channel 00/0 : 0[0] -> 1[0] [send] via NET/IBext_v11/0\n"
            "spark1:10:30 [0] NCCL INFO Channel 01/0 : 0[0] -> 1[0] [send] via NET/IBext_v11/0\n")
    log = nccl_log.parse(text)
    assert log.transport.rdma and log.networks == ["IBext_v11"]
    assert log.ib_devices == ["rocep1s0f1"] and log.net_devices == [0]
    plugin_only = nccl_log.parse("h:1:1 [0] NCCL INFO Using network IBext_v8\n").transport
    assert plugin_only.rdma and plugin_only.evidence == "plugin" and "IBext_v8" in plugin_only.detail
    assert nccl_log.net_kind("IBext") == "NET/IB" and nccl_log.net_kind("UCX") == "NET/UCX"


def test_nccl_log_ring_summary_says_gdr_off() -> None:
    log = nccl_log.parse(body(REAL / "nccl_debug_ring_GDR0_dgx_spark_pair_nccl2.30.7.txt"))
    assert log.ring_gdr is False and log.ring_pxn is False
    assert log.gdr_disabled and not log.gdr_used
    assert log.version == "2.30.7+cuda13.3"
    assert log.ib_devices == ["rocep1s0f1", "roceP2p1s0f1"]
    on = nccl_log.parse("h:1:1 [0] NCCL INFO Connected all rings, use ring PXN 1 GDR 1\n")
    assert on.ring_gdr and on.ring_pxn and on.gdr_used and not on.gdr_disabled


def test_nccl_log_bare_lines_must_look_like_nccl() -> None:
    with pytest.raises(ParseError):
        nccl_log.parse("Using the network as configured\nChannel 5 is blue\n")


@pytest.mark.parametrize("text", GARBAGE)
def test_nccl_log_garbage(text: str) -> None:
    with pytest.raises(ParseError, match="could not parse NCCL debug log output"):
        nccl_log.parse(text)


# -- nccl-tests tables -------------------------------------------------------------------------

def test_nccl_tests_healthy_two_sparks() -> None:
    (t,) = nccl_tests.parse(
        body(REAL / "nccl-tests_all_gather_perf_2x_dgx_spark_healthy_21.4GBs_jp_notebook.txt"))
    assert t.name == "all_gather_perf" and t.op == "all_gather"
    assert t.tool == "nccl-tests version 2.18.3"
    assert [r.size for r in t.rows] == [1073741824, 2147483648, 4294967296]
    first = t.rows[0]
    assert first.oop is not None and (first.oop.time_us, first.oop.algbw, first.oop.busbw) == (
        27211.0, 39.46, 19.73)
    assert first.ip is not None and first.ip.busbw == 20.80 and first.ip.wrong == 0
    assert t.avg_busbw == 21.4033 and t.busbw_at_largest == 22.46
    assert t.out_of_bounds == 0 and t.wrong == 0
    assert [r[1] for r in t.ranks] == ["spark-fb97", "spark-4440"]
    assert t.ranks[0][2] == "NVIDIA GB10"


def test_nccl_tests_degraded() -> None:
    (t,) = nccl_tests.parse(
        body(REAL / "nccl-tests_all_gather_perf_2x_dgx_spark_DEGRADED_2.8GBs_jp_notebook.txt"))
    assert t.avg_busbw == 2.82151 and t.busbw_at_largest == 2.83 and t.peak_busbw == 2.83


@pytest.mark.parametrize(("name", "reduce_bw", "gather_bw"), [
    ("nccl_probe_h200x2_nvlink.txt", 330.16, 286.27),
    ("nccl_probe_h200x2_sockets.txt", 3.37, 3.70),
])
def test_nccl_tests_reads_the_probe_on_h200(name: str, reduce_bw: float, gather_bw: float) -> None:
    tables = {t.op: t for t in nccl_tests.parse(body(CAPTURED / name))}
    assert set(tables) == {"all_reduce", "all_gather"}
    ar, ag = tables["all_reduce"], tables["all_gather"]
    assert ar.tool == "dgxcluster nccl_probe 1" and len(ar.rows) == 6
    assert ar.rows[0].oop is None  # torch has no out-of-place all_reduce: N/A, not a number
    assert ar.busbw_at_largest == reduce_bw and ag.busbw_at_largest == gather_bw
    assert ar.largest is not None and ar.largest.size == 1 << 30
    assert ag.wrong == 0 and ar.out_of_bounds == 0


def test_nccl_tests_old_format_without_root_and_with_error_column() -> None:
    text = ("#                                        out-of-place                    in-place\n"
            "#       size         count    type   redop     time   algbw   busbw  error     time"
            "   algbw   busbw  error\n"
            "     8388608       2097152   float     sum    812.3   10.33   10.33  0e+00    810.1"
            "   10.36   10.36  0e+00\n"
            " Out of bounds values : 0 OK\n")
    (t,) = nccl_tests.parse(text)
    assert t.rows[0].best_busbw == 10.36 and t.rows[0].ip is not None
    assert t.name is None and t.avg_busbw is None


def test_nccl_tests_two_tables_without_start_lines() -> None:
    head = "#  size  count  type  redop  root  time  algbw  busbw  #wrong  time  algbw  busbw  #wrong\n"
    row = "  1024  256  float  sum  -1  10.0  0.10  0.10  N/A  10.0  0.10  0.10  N/A\n"
    tables = nccl_tests.parse(head + row + head + row.replace("0.10", "0.20"))
    assert [t.busbw_at_largest for t in tables] == [0.10, 0.20]
    assert tables[0].rows[0].oop is not None and tables[0].rows[0].oop.wrong is None


TAIL = (
    "  2147483648     268435456     float    none      -1  50573.4   42.46   21.23       0"
    "  48690.4   44.10   22.05       0\n"
    "  4294967296     536870912     float    none      -1  96986.7   44.28   22.14       0"
    "  95610.9   44.92   22.46       0\n"
    "# Out of bounds values : 0 OK\n"
    "# Avg bus bandwidth    : 21.4033 \n"
    "#\n"
    "# Collective test concluded: all_gather_perf\n")


def test_nccl_tests_log_tail_without_header() -> None:
    # `tail -n 6` of the healthy capture: rows and summary, no column header.
    full = body(REAL / "nccl-tests_all_gather_perf_2x_dgx_spark_healthy_21.4GBs_jp_notebook.txt")
    assert TAIL in full
    (t,) = nccl_tests.parse(TAIL)
    assert not t.header and t.columns == nccl_tests.DEFAULT_COLUMNS
    assert [r.size for r in t.rows] == [2147483648, 4294967296]
    assert t.busbw_at_largest == 22.46 and t.avg_busbw == 21.4033 and t.out_of_bounds == 0
    assert t.name == "all_gather_perf"  # from 'Collective test concluded'


def test_nccl_tests_only_the_average_line() -> None:
    (t,) = nccl_tests.parse("# Avg bus bandwidth    : 2.82151 \n")
    assert t.avg_busbw == 2.82151 and t.rows == [] and t.busbw_at_largest is None


def test_nccl_tests_headerless_old_format_rows() -> None:
    row = ("     8388608       2097152   float     sum    812.3   10.33   10.33  0e+00    810.1"
           "   10.36   10.36  0e+00\n")
    (t,) = nccl_tests.parse(row)
    assert t.columns == nccl_tests.OLD_COLUMNS and t.rows[0].best_busbw == 10.36


@pytest.mark.parametrize("text", GARBAGE + [
    "test.cu:896 NCCL failure common.cu:1116 'unhandled system error'\n",
    "#  size count type redop root time algbw busbw #wrong\n 1024 x y\n",
])
def test_nccl_tests_garbage(text: str) -> None:
    with pytest.raises(ParseError, match="could not parse nccl-tests output"):
        nccl_tests.parse(text)


# -- ib_write_bw -------------------------------------------------------------------------------

def test_ib_write_bw_playbook_client() -> None:
    bw = ib_write_bw.parse(body(REAL / "ib_write_bw_client1_rocep1s0f0_dgx_spark_playbook.txt"))
    assert bw.unit == "Gb/sec" and len(bw.rows) == 5
    assert bw.device == "rocep1s0f0" and bw.link_type == "Ethernet"
    assert bw.info["Mtu"] == "1024[B]" and bw.info["GID index"] == "3"
    assert bw.average_gbits == pytest.approx(92.568)


def test_ib_write_bw_megabytes_and_sweep() -> None:
    text = (" #bytes     #iterations    BW peak[MB/sec]    BW average[MB/sec]   MsgRate[Mpps]\n"
            " 2          5000           1.00               0.99                 0.5\n"
            " 65536      5000           11000.00           11000.00             0.17\n")
    bw = ib_write_bw.parse(text)
    assert bw.average_gbits == pytest.approx(11000 * 1048576 * 8 / 1e9)


@pytest.mark.parametrize("text", GARBAGE + [
    " Couldn't connect to 192.168.100.11:18515\nUnable to open file descriptor for socket connection\n",
    "Device not recognized to implement inline feature. Disabling it\n IB device rocep9 not found\n",
])
def test_ib_write_bw_garbage(text: str) -> None:
    with pytest.raises(ParseError, match="could not parse ib_write_bw output"):
        ib_write_bw.parse(text)


def test_ib_write_bw_failure_is_quoted() -> None:
    with pytest.raises(ParseError, match="Couldn't connect"):
        ib_write_bw.parse(" Couldn't connect to 192.168.100.11:18515\n")


# -- nvidia-smi --------------------------------------------------------------------------------

def test_nvidia_smi_gb10() -> None:
    info = nvidia_smi.parse(body(REAL / "nvidia-smi_gb10_with_processes_obrienlabs.txt"))
    assert (info.driver, info.cuda) == ("580.95.05", "13.0")
    assert [(g.index, g.name, g.bus_id) for g in info.gpus] == [(0, "NVIDIA GB10", "0000000F:01:00.0")]


def test_nvidia_smi_gb10_driver_580_173_with_two_engine_cores() -> None:
    info = nvidia_smi.parse(body(REAL / "nvidia-smi_gb10_580.173.02_two_vllm_enginecores.txt"))
    assert info.driver == "580.173.02" and info.cuda == "13.0" and info.error is None
    (gpu,) = info.gpus
    assert gpu.name == "NVIDIA GB10" and gpu.memory == "Not Supported" and gpu.temperature_c == 54
    assert [p.name for p in info.processes if p.type == "C"] == ["VLLM::EngineCore"] * 2


def test_nvidia_smi_failures() -> None:
    bad = nvidia_smi.parse("NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA "
                           "driver. Make sure that the latest NVIDIA driver is installed and running.\n")
    assert bad.error and "couldn't communicate" in bad.error
    none = nvidia_smi.parse("No devices were found\n")
    assert none.error is None and none.gpus == []


@pytest.mark.parametrize("text", GARBAGE)
def test_nvidia_smi_garbage(text: str) -> None:
    with pytest.raises(ParseError, match="could not parse nvidia-smi output"):
        nvidia_smi.parse(text)


def test_nvidia_smi_gb10_row_details_and_processes() -> None:
    info = nvidia_smi.parse(body(REAL / "nvidia-smi_gb10_with_processes_obrienlabs.txt"))
    (gpu,) = info.gpus
    assert (gpu.temperature_c, gpu.power, gpu.memory, gpu.utilization_pct) == (
        45, "11W / N/A", "Not Supported", 10)
    assert [p.pid for p in info.processes] == [4174, 4399, 4761]
    assert info.processes[2].name == ".../7182/usr/lib/firefox/firefox"
    assert (info.processes[2].type, info.processes[2].memory) == ("G", "273MiB")


def test_nvidia_smi_datacenter_gpus_with_memory_and_no_processes() -> None:
    text = """+-----------------------------------------------------------------------------------------+
| NVIDIA-SMI 570.86.15              Driver Version: 570.86.15      CUDA Version: 12.8     |
|-----------------------------------------+------------------------+----------------------+
| GPU  Name                 Persistence-M | Bus-Id          Disp.A | Volatile Uncorr. ECC |
| Fan  Temp   Perf          Pwr:Usage/Cap |           Memory-Usage | GPU-Util  Compute M. |
|=========================================+========================+======================|
|   0  NVIDIA H200                    On  |   00000000:18:00.0 Off |                    0 |
| N/A   31C    P0             76W /  700W |       1MiB / 143771MiB |      0%      Default |
+-----------------------------------------+------------------------+----------------------+
|   1  NVIDIA H200                    On  |   00000000:2A:00.0 Off |                    0 |
| N/A   29C    P0             75W /  700W |       1MiB / 143771MiB |     97%      Default |
+-----------------------------------------+------------------------+----------------------+

+-----------------------------------------------------------------------------------------+
| Processes:                                                                              |
|  GPU   GI   CI              PID   Type   Process name                        GPU Memory |
|=========================================================================================|
|  No running processes found                                                             |
+-----------------------------------------------------------------------------------------+
"""
    info = nvidia_smi.parse(text)
    assert [(g.index, g.bus_id, g.utilization_pct, g.memory) for g in info.gpus] == [
        (0, "00000000:18:00.0", 0, "1MiB / 143771MiB"), (1, "00000000:2A:00.0", 97,
                                                         "1MiB / 143771MiB")]
    assert info.gpus[0].power == "76W / 700W"
    assert info.processes == []


# -- ray status (and the dashboard's /api/cluster_status?format=1) ------------------------------

def test_ray_status_two_sparks() -> None:
    rs = ray_status.parse(body(REAL / "ray_status_2x_dgx_spark_head_container_oshlabs.txt"))
    assert rs.error is None
    assert rs.nodes == 2 and rs.gpus == 2.0
    assert rs.pending == [] and rs.failures == [] and rs.idle == []
    assert rs.gpu_usage == ray_status.Usage(0.0, 2.0, "", None)
    assert rs.totals["CPU"] == 40.0
    assert rs.usage["memory"] == ray_status.Usage(0.0, 221.76, "GiB", None)


def test_ray_dashboard_answer_from_ray_2_60() -> None:
    rs = ray_status.parse_dashboard(
        body(CAPTURED / "ray_cluster_status_format1_testbed_1node.txt"))
    assert rs.error is None and rs.nodes == 1
    assert rs.gpu_usage == ray_status.Usage(0.0, 1.0, "", None)


def test_placement_group_reservation_is_kept() -> None:
    rs = ray_status.parse_dashboard(
        body(CAPTURED / "ray_cluster_status_format1_testbed_placement_group.txt"))
    assert rs.gpu_usage == ray_status.Usage(0.0, 1.0, "", 1.0)
    assert rs.usage["CPU"].reserved == 1.0


def test_ray_status_newer_layout_with_idle_pending_failures_and_node_blocks() -> None:
    text = """======== Autoscaler status: 2026-01-01 00:00:00 ========
Node status
---------------------------------------------------------------
Active:
 1 node_aaaa
Idle:
 2 node_bbbb
Pending:
 10.0.0.3: worker, setting up
Recent failures:
 worker: NodeTerminated (ip: 10.0.0.4)

Resources
---------------------------------------------------------------
Total Usage:
 2.0/3.0 GPU (2.0 used of 2.0 reserved in placement groups)
 1.0/60.0 CPU
Total Constraints:
 (no request_resources() constraints)
Total Demands:
 (no resource demands)

Node: aaaa (node_aaaa)
 Usage:
  1.0/1.0 GPU (1.0 used of 1.0 reserved in placement groups)
  1.0/20.0 CPU
"""
    rs = ray_status.parse(text)
    assert rs.nodes == 3 and rs.active == ["node_aaaa"] and rs.idle == ["node_bbbb"] * 2
    assert rs.pending == ["10.0.0.3: worker, setting up"]
    assert rs.failures == ["worker: NodeTerminated (ip: 10.0.0.4)"]
    assert rs.gpu_usage == ray_status.Usage(2.0, 3.0, "", 2.0)
    assert rs.totals == {"GPU": 3.0, "CPU": 60.0}  # per-node blocks are not added


def test_older_ray_healthy_and_usage_sections() -> None:
    rs = ray_status.parse("Node status\n----\nHealthy:\n 1 node_x\n\nResources\n----\nUsage:\n"
                          " 0.0/1.0 GPU\n")
    assert rs.nodes == 1 and rs.gpu_usage == ray_status.Usage(0.0, 1.0)


def test_ray_not_ready_yet() -> None:
    rs = ray_status.parse("No cluster status. It may take a few seconds for the Ray internal "
                          "services to start up.\n")
    assert rs.error is not None and "No cluster status" in rs.error and rs.nodes == 0


@pytest.mark.parametrize("text", [*GARBAGE, "ConnectionError: could not connect to GCS", "{}",
                                  "Node status\n-----\n"])
def test_ray_garbage_is_reported_not_raised(text: str) -> None:
    rs = ray_status.parse(text)
    assert rs.error is not None and rs.error.startswith("could not parse `ray status`")


@pytest.mark.parametrize("text", ["<html>502</html>", '{"data": {}}',
                                  '{"result": true, "data": {"clusterStatus": "No cluster status."}}'])
def test_dashboard_garbage_is_reported_not_raised(text: str) -> None:
    rs = ray_status.parse_dashboard(text)
    assert rs.error is not None
    assert rs.error.startswith("could not parse `GET /api/cluster_status?format=1`")

def test_every_fixture_is_read_by_some_test() -> None:
    tests_dir = Path(__file__).resolve().parents[1]
    used = "".join(p.read_text() for p in tests_dir.rglob("*.py"))
    for f in [*REAL.iterdir(), *CAPTURED.iterdir()]:
        assert f.name in used, f.name
