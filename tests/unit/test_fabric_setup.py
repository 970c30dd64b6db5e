"""`fabric plan | apply`: the netplan file rendered from the inventory, what a node holds
(a real probe captured on the testbed), the plan's verdicts, and apply's flow on fakes:
nothing written when one node is refused, a rollback of every changed node when a link does
not answer."""

from __future__ import annotations

import base64
import json
from dataclasses import replace
from pathlib import Path

import pytest

from dgxcluster.core import netplan
from dgxcluster.core.session import Session
from dgxcluster.core.steps import Status
from dgxcluster.fabricsetup import apply as fapply
from dgxcluster.fabricsetup import probe
from dgxcluster.fabricsetup.plan import plan_node
from dgxcluster.facts import netplan as netplan_fact
from dgxcluster.inventory import load_inventory, parse_inventory, topology
from dgxcluster.inventory.load import Inventory
from tests.fakes import FakeConnection, Reply

HERE = Path(__file__).resolve().parents[1]
CAPTURED = HERE / "fixtures" / "captured"
PROBE = (CAPTURED / "fabric_probe_ring3_node2_testbed.txt").read_text().partition("\n")[2]
EXAMPLES = HERE.parent / "inventory"


def ring3() -> Inventory:
    return load_inventory(CAPTURED / "testbed_ring3_inventory.yaml", environ={})


def test_render_a_ring_node() -> None:
    text = netplan.render(ring3(), "node2")
    assert text.startswith("# /etc/netplan/40-cx7.yaml for node2: the CX-7 fabric (ring of 3 "
                           "nodes, 6 links).\n")
    assert """    enp1s0f1np1:
      dhcp4: false
      dhcp6: false
      mtu: 9000
      addresses: [10.220.2.12/24]
""" in text
    assert "enP7s7" not in text  # the management interface is never written
    assert netplan.interfaces(ring3(), "node2") == [
        "enp1s0f1np1", "enP2p1s0f1np1", "enp1s0f0np0", "enP2p1s0f0np0"]


def test_render_asymmetric_and_switch_nodes() -> None:
    inv = load_inventory(EXAMPLES / "example-asymmetric.yaml", environ={})
    two = netplan_fact.parse_file(netplan.render(inv, "spark2"))
    assert two == {"enp1s0f0np0": {"dhcp4": False, "dhcp6": False, "mtu": 9000,
                                   "addresses": ["192.168.100.11/24"]},
                   "enP2p1s0f0np0": {"dhcp4": False, "dhcp6": False, "mtu": 9000,
                                     "addresses": ["192.168.101.11/24"]}}
    sw = load_inventory(EXAMPLES / "example-switch.yaml", environ={})
    assert "addresses: [192.168.101.14/24]" in netplan.render(sw, "spark4")


def test_netplan_files_merge_as_netplan_merges_them() -> None:
    text = ("@@file /etc/netplan/40-cx7.yaml\nnetwork:\n  version: 2\n  ethernets:\n"
            "    enp1s0f1np1: {addresses: [192.168.100.10/24], mtu: 1500}\n"
            "@@file /etc/netplan/90-more.yaml\nnetwork:\n  ethernets:\n"
            "    enp1s0f1np1: {addresses: ['10.0.0.1/24', 'fd00::1/64'], mtu: 9000, dhcp4: no}\n"
            "@@file /etc/netplan/50-cloud-init.yaml\n@@unreadable /etc/netplan/50-cloud-init.yaml\n")
    plan = netplan_fact.parse(text)
    conf = plan.ethernets["enp1s0f1np1"]
    assert [str(a) for a in conf.addresses] == ["192.168.100.10/24", "10.0.0.1/24"]
    assert conf.other_addresses == ["fd00::1/64"] and conf.mtu == 9000 and conf.dhcp4 is False
    assert plan.unreadable == ["/etc/netplan/50-cloud-init.yaml"]
    bad = netplan_fact.parse("@@file /etc/netplan/x.yaml\nnot: [yaml\n")
    assert bad.errors and "not YAML" in bad.errors[0]


def test_probe_of_a_real_testbed_node() -> None:
    st = probe.parse(PROBE)
    assert st.uid == 0 and st.privileged and st.sudo_argv == []
    assert str(st.ssh_address) == "10.210.2.12" and st.management() == ["enP7s7"]
    assert st.netplan == "/usr/local/sbin/netplan" and st.mode == 0o600
    assert st.content == netplan.render(ring3(), "node2")
    plan = plan_node(ring3(), "node2", st)
    assert not plan.changed and plan.refusals == [] and plan.diff() == ""
    assert plan.summary().startswith("unchanged")


def _state(**kw: object) -> probe.NodeState:
    return replace(probe.parse(PROBE), **kw)  # type: ignore[arg-type]


def test_a_changed_file_and_live_drift_are_planned() -> None:
    st = _state(content="network: {version: 2}\n", mode=0o644)
    p = plan_node(ring3(), "node2", st)
    assert p.changed and p.file_changed
    assert p.diff().startswith("--- node2:/etc/netplan/40-cx7.yaml\n+++ node2:/etc/netplan/"
                               "40-cx7.yaml (inventory)\n")
    assert p.summary() == "would rewrite /etc/netplan/40-cx7.yaml"
    missing = plan_node(ring3(), "node2", _state(exists=False, content=None, mode=None))
    assert missing.summary() == "would create /etc/netplan/40-cx7.yaml"
    assert missing.diff().startswith("--- /dev/null\n")
    ifaces = dict(probe.parse(PROBE).ifaces)
    ifaces["enp1s0f1np1"] = replace(ifaces["enp1s0f1np1"], mtu=1500, ipv4=[])
    drift = plan_node(ring3(), "node2", _state(ifaces=ifaces))
    assert not drift.file_changed and drift.changed
    assert drift.live == ["enp1s0f1np1 has no IPv4 address, wants 10.220.2.12/24",
                          "enp1s0f1np1 has MTU 1500, wants 9000"]


def test_refusals_name_the_fix() -> None:
    nosudo = plan_node(ring3(), "node2", _state(uid=1000, sudo=False,
                                                sudo_error="sudo: a password is required"))
    assert nosudo.refusals[0].startswith("writing /etc/netplan/40-cx7.yaml needs root or "
                                         "passwordless sudo on node2: `sudo -n true` says "
                                         "'sudo: a password is required'; fix: log in as root")
    sudo = _state(uid=1000, sudo=True)
    assert sudo.privileged and sudo.sudo_argv == ["sudo", "-n"]
    mgmt = plan_node(ring3(), "node2", _state(default_route=["enp1s0f0np0"]))
    assert "enp1s0f0np0 carries the SSH session or the default route" in mgmt.refusals[0]
    ifaces = {k: v for k, v in probe.parse(PROBE).ifaces.items() if k != "enP2p1s0f0np0"}
    gone = plan_node(ring3(), "node2", _state(ifaces=ifaces, netplan=None))
    assert gone.refusals[0] == "netplan is not installed (DGX OS ships it as /usr/sbin/netplan)"
    assert gone.refusals[1].startswith("enP2p1s0f0np0 does not exist on node2")


# -- apply on fakes --------------------------------------------------------------------------

def _fakes(inv: Inventory, probes: dict[str, str], pings_ok: bool = True) -> dict[str, FakeConnection]:
    fakes = {}
    for name in inv.names:
        f = FakeConnection(name)
        f.on(r"@@uid", Reply(stdout=probes[name]))
        f.on(r"netplan apply$|mv \"\$f.tmp\"", Reply())
        f.on(r"^ip -j addr show$", Reply(stdout=probes[name].partition("@@addr\n")[2]))
        f.on(r"@@ping", lambda argv, _data: Reply(stdout="".join(
            f"@@ping {i}\n2 packets transmitted, {2 if pings_ok else 0} received\n"
            for i in range((len(argv) - 5) // 2))))
        fakes[name] = f
    return fakes


def _session(inv: Inventory, fakes: dict[str, FakeConnection], tmp: Path) -> Session:
    return Session.open(inv, factory=lambda spec: fakes[spec.name], environ={}, log_dir=tmp)


def _probe_for(inv: Inventory, node: str, content: str | None) -> str:
    """The captured probe's shape with this node's file and fabric addresses (as `ip -j addr`
    prints them, from the captured node2's entries)."""
    head, _, addrs = PROBE.partition("@@addr\n")
    lines = [ln for ln in head.splitlines() if not ln.startswith(("@@content", "@@mode"))]
    if content is not None:
        lines += ["@@mode 600", "@@content " + base64.b64encode(content.encode()).decode()]
    entries = json.loads(addrs)
    mine = {p.interface: str(p.address) for p in topology.of(inv).ports(node)}
    for e in entries:
        for a in e.get("addr_info", []):
            if e["ifname"] in mine and a.get("family") == "inet":
                a["local"] = mine[e["ifname"]]
    return "\n".join(lines) + "\n@@addr\n" + json.dumps(entries)


def test_apply_writes_only_changed_nodes_then_a_second_run_is_unchanged(tmp_path: Path) -> None:
    inv = ring3()
    probes = {n: _probe_for(inv, n, netplan.render(inv, n) if n != "node2" else "old\n")
              for n in inv.names}
    fakes = _fakes(inv, probes)
    with _session(inv, fakes, tmp_path) as s:
        report = fapply.apply(s, inv.names, verify_timeout_s=1)
    by = {o.node: o for o in report.outcomes}
    assert by["node2"].status is Status.CHANGED and by["node1"].status is Status.UNCHANGED
    writes = [(c, d) for c, d in zip(fakes["node2"].calls, fakes["node2"].stdins, strict=True)
              if "netplan apply" in " ".join(c) and "mv" in " ".join(c)]
    assert len(writes) == 1 and writes[0][1] == netplan.render(inv, "node2").encode()
    assert not any("netplan apply" in " ".join(c) for c in fakes["node1"].calls)
    again = _fakes(inv, {n: _probe_for(inv, n, netplan.render(inv, n)) for n in inv.names})
    with _session(inv, again, tmp_path) as s:
        second = fapply.apply(s, inv.names)
    assert {o.status for o in second.outcomes} == {Status.UNCHANGED}
    assert all(len(f.calls) == 1 for f in again.values())  # the probe, nothing else


def test_a_refused_node_stops_every_write(tmp_path: Path) -> None:
    inv = ring3()
    probes = {n: _probe_for(inv, n, "old\n") for n in inv.names}
    probes["node3"] = probes["node3"].replace("@@uid 0", "@@uid 1000\n@@sudo no sudo: a "
                                              "password is required")
    fakes = _fakes(inv, probes)
    with _session(inv, fakes, tmp_path) as s:
        report = fapply.apply(s, inv.names)
    by = {o.node: o for o in report.outcomes}
    assert by["node3"].status is Status.FAILED and "passwordless sudo" in by["node3"].detail
    assert by["node1"].status is Status.SKIPPED
    assert by["node1"].detail == "nothing was changed (node3 cannot be set up)"
    for f in fakes.values():
        assert not any("netplan apply" in " ".join(c) for c in f.calls)


def test_links_that_do_not_answer_roll_every_changed_node_back(tmp_path: Path) -> None:
    inv = ring3()
    probes = {n: _probe_for(inv, n, "old\n") for n in inv.names}
    fakes = _fakes(inv, probes, pings_ok=False)
    with _session(inv, fakes, tmp_path) as s:
        report = fapply.apply(s, inv.names, verify_timeout_s=0.1)
    assert sorted(report.rolled_back) == inv.names
    for name, f in fakes.items():
        rollback = [c for c in f.calls if "dgxcluster-prev" in " ".join(c) and "flush" in " ".join(c)]
        assert len(rollback) == 1, name
        # the managed interfaces' addresses before apply, restored by the rollback
        assert any(a.startswith("enp1s0f1np1|9000|10.220.2.12/24") for a in rollback[0]) \
            if name == "node2" else True
    o = {x.node: x for x in report.outcomes}["node1"]
    assert o.status is Status.FAILED and "does not answer" in o.detail


@pytest.mark.parametrize("node", ["node1", "node3"])
def test_every_node_of_the_ring_is_planned_from_its_links(node: str) -> None:
    inv = parse_inventory((CAPTURED / "testbed_ring3_inventory.yaml").read_text(), environ={})
    parsed = netplan_fact.parse_file(netplan.render(inv, node))
    assert len(parsed) == 4 and all(v["mtu"] == 9000 for v in parsed.values())
