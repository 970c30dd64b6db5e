"""verify-ib's per-link table and its netplan check: facts in (the real captures' shapes),
rows with both ping directions, MTU, speed and RDMA state out; drift from what survives a
reboot WARNs."""

from __future__ import annotations

from pathlib import Path

from dgxcluster.facts import netplan, ping
from dgxcluster.verify.gather import Fact, ping_targets
from dgxcluster.verify.links import link_checks
from dgxcluster.verify.netplan_check import netplan_check
from dgxcluster.verify.results import Level
from tests.unit.test_topology import ring
from tests.unit.test_verify_checks import inv, spark

CAPTURED = Path(__file__).resolve().parents[1] / "fixtures" / "captured"


def _capture(name: str) -> str:
    return (CAPTURED / name).read_text().partition("\n")[2]


def test_every_link_gets_a_row_with_both_directions() -> None:
    rows = link_checks(inv(), {"spark1": spark(0), "spark2": spark(1)})
    assert [r.node for r in rows] == ["spark1:enp1s0f1np1<->spark2:enp1s0f1np1",
                                      "spark1:enP2p1s0f1np1<->spark2:enP2p1s0f1np1"]
    r = rows[0]
    assert r.status == Level.PASS and r.check == "link"
    assert r.detail == ("rail 0 192.168.100.0/24: 192.168.100.10 -> 192.168.100.11 ok 0.10 ms, "
                        "back ok 0.10 ms; mtu 9000/9000; 200000/200000 Mb/s")
    assert r.to_json()["data"]["b"]["rdma_state"] == "ACTIVE"


def test_a_link_that_does_not_answer_is_named() -> None:
    down = spark(1, states={"rocep1s0f1": False})
    down.pings[("spark1", 0)] = Fact(ping.PingResult(2, 0))
    rows = {r.node: r for r in link_checks(inv(), {"spark1": spark(0), "spark2": down})}
    bad = rows["spark1:enp1s0f1np1<->spark2:enp1s0f1np1"]
    assert bad.status == Level.FAIL
    assert bad.detail.startswith("ping spark1 <- spark2: 0/2 replies; spark2 rocep1s0f1 DOWN")
    assert rows["spark1:enP2p1s0f1np1<->spark2:enP2p1s0f1np1"].status == Level.PASS


def test_ping_targets_follow_the_topology() -> None:
    from dgxcluster.inventory import parse_inventory

    r3 = parse_inventory(ring(3), environ={})
    assert ping_targets(r3, "s1") == [
        ("enp1s0f0np0", "10.20.0.12", 0, "s2"), ("enP2p1s0f0np0", "10.20.1.12", 1, "s2"),
        ("enp1s0f1np1", "10.20.4.13", 4, "s3"), ("enP2p1s0f1np1", "10.20.5.13", 5, "s3")]
    assert [t[3] for t in ping_targets(inv(), "spark2")] == ["spark1", "spark1"]


def test_one_round_trip_of_pings_is_split_per_target() -> None:
    ok, lost = _capture("ping_ok_jumbo_testbed.txt"), _capture("ping_no_reply_testbed.txt")
    blocks = ping.split_batch(f"@@ping 0\n{ok}\n@@rc 0\n@@ping 1\n{lost}\n@@rc 1\n", 2)
    assert ping.parse(blocks[0]).ok and not ping.parse(blocks[1]).ok
    assert ping.batch_args([("enp1s0f1np1", "10.0.0.2")], 9000) == ["8972", "enp1s0f1np1",
                                                                    "10.0.0.2"]
    assert ping.not_installed("sh: 1: ping: not found\n@@rc 127")


def _netplan(body: str) -> Fact[netplan.Netplan]:
    return Fact(netplan.parse(f"@@file /etc/netplan/40-cx7.yaml\n{body}"))


NETPLAN = """network:
  version: 2
  ethernets:
    enp1s0f1np1: {mtu: 9000, addresses: [192.168.100.10/24]}
    enP2p1s0f1np1: {mtu: 9000, addresses: [192.168.101.10/24]}
"""


def test_netplan_matches_the_live_fabric() -> None:
    i = inv()
    f = spark(0, netplan=_netplan(NETPLAN))
    (r,) = netplan_check(i, i.node("spark1"), f)
    assert r.status == Level.PASS
    assert r.detail == "enp1s0f1np1, enP2p1s0f1np1 as netplan sets them (/etc/netplan/40-cx7.yaml)"


def test_what_does_not_survive_a_reboot_warns() -> None:
    i = inv()
    hand = NETPLAN.replace("enp1s0f1np1: {mtu: 9000, addresses: [192.168.100.10/24]}",
                           "enp1s0f1np1: {addresses: [192.168.100.10/24]}").replace(
        "    enP2p1s0f1np1: {mtu: 9000, addresses: [192.168.101.10/24]}\n", "")
    (r,) = netplan_check(i, i.node("spark1"), spark(0, netplan=_netplan(hand)))
    assert r.status == Level.WARN and "dgxcluster fabric apply" in r.fix
    assert ("enp1s0f1np1 has MTU 9000 now but netplan says no mtu (1500 at boot): set by hand?"
            in r.detail)
    assert "enP2p1s0f1np1 is in no netplan file: its addresses and MTU are lost at reboot" \
        in r.detail
    other = NETPLAN.replace("192.168.100.10/24", "192.168.100.99/24")
    (r,) = netplan_check(i, i.node("spark1"), spark(0, netplan=_netplan(other)))
    assert "192.168.100.10/24 on enp1s0f1np1 is not in netplan (/etc/netplan/40-cx7.yaml): " \
           "set by hand?" in r.detail
    assert "netplan gives enp1s0f1np1 192.168.100.99/24, which it does not have now" in r.detail
    locked = Fact(netplan.parse("@@file /etc/netplan/40-cx7.yaml\n"
                                "@@unreadable /etc/netplan/40-cx7.yaml\n"))
    (r,) = netplan_check(i, i.node("spark1"), spark(0, netplan=locked))
    assert r.status == Level.WARN and "cannot read /etc/netplan/40-cx7.yaml" in r.detail
