"""verify-ib's per-link table: one row per pair of ports that share a segment (every pair on
a switch, each cable twin on a ring), with both ping directions, each end's MTU, link speed
and RDMA port state. Pure: the topology and the gathered facts in, `CheckResult`s (check
`link`, node = the two ends) with the figures in `data` for `--json` out.
"""

from __future__ import annotations

from typing import Any

from dgxcluster.inventory import topology
from dgxcluster.inventory.schema import InventoryModel
from dgxcluster.inventory.topology import Port, Segment
from dgxcluster.verify.gather import Fact, NodeFacts
from dgxcluster.verify.rdma import rdma_view
from dgxcluster.verify.results import CheckResult, Level

CHECK = "link"


def link_label(a: Port, b: Port) -> str:
    return f"{a.label()}<->{b.label()}"


def _end(p: Port, f: NodeFacts | None) -> dict[str, Any]:
    out: dict[str, Any] = {"node": p.node, "interface": p.interface,
                           "rdma_device": p.rdma_device, "address": str(p.address)}
    if f is None:
        return {**out, "read": False}
    iface = (f.ifaces.value or {}).get(p.interface)
    speed = f.speeds.get(p.interface)
    dev = (rdma_view(f) or {}).get(p.rdma_device or "")
    return {**out, "read": True, "mtu": iface.mtu if iface else None,
            "up": iface.up if iface else False,
            "speed_mbps": speed.value.speed_mbps if speed and speed.value else None,
            "rdma_state": dev.state if dev else None}


def _ping(f: NodeFacts | None, peer: str, seg: int) -> dict[str, Any] | None:
    if f is None:
        return None
    fact: Fact[Any] | None = f.pings.get((peer, seg))
    if fact is None:
        return {"ok": False, "error": "not pinged"}
    p = fact.value
    if p is None:
        return {"ok": False, "error": fact.error or "no result"}
    why = p.error or (f"too big (mtu {p.too_big_mtu})" if p.too_big_mtu is not None else None)
    return {"ok": p.ok, "replies": f"{p.received}/{p.transmitted}", "rtt_ms": p.rtt_avg_ms,
            "error": None if p.ok else (why or f"{p.received}/{p.transmitted} replies")}


def _way(x: dict[str, Any] | None) -> str:
    if x is None:
        return "not read"
    if x["ok"]:
        return f"ok {x['rtt_ms']:.2f} ms" if x.get("rtt_ms") is not None else "ok"
    return str(x["error"])


def _pair(a: Port, b: Port, seg: Segment, index: int, facts: dict[str, NodeFacts],
          mtu: int, speed: int) -> CheckResult:
    fa, fb = facts.get(a.node), facts.get(b.node)
    ea, eb = _end(a, fa), _end(b, fb)
    ab, ba = _ping(fa, b.node, index), _ping(fb, a.node, index)
    problems = []
    for way, x in (("->", ab), ("<-", ba)):
        if x is not None and not x["ok"]:
            problems.append(f"ping {a.node} {way} {b.node}: {x['error']}")
    for e in (ea, eb):
        if e["read"] and e.get("rdma_state") not in (None, "ACTIVE"):
            problems.append(f"{e['node']} {e['rdma_device']} {e['rdma_state']}")
        if e["read"] and e.get("mtu") is not None and e["mtu"] < mtu:
            problems.append(f"{e['node']} {e['interface']} mtu {e['mtu']} < {mtu}")
    slow = [e for e in (ea, eb) if e["read"] and e.get("speed_mbps") and e["speed_mbps"] < speed]
    mtus = "/".join(str(e.get("mtu", "?")) for e in (ea, eb))
    speeds = "/".join(str(e.get("speed_mbps") or "?") for e in (ea, eb))
    detail = (f"{seg.name} {seg.network}: {a.address} -> {b.address} {_way(ab)}, back "
              f"{_way(ba)}; mtu {mtus}; {speeds} Mb/s")
    data = {"segment": seg.name, "subnet": str(seg.network), "a": ea, "b": eb,
            "ping_a_to_b": ab, "ping_b_to_a": ba}
    label = link_label(a, b)
    if problems:
        return CheckResult(label, CHECK, Level.FAIL, f"{'; '.join(problems)} ({detail})",
                           "check this cable (both ends' port and QSFP module), both ends' "
                           "addresses and MTU", data)
    if slow:
        return CheckResult(label, CHECK, Level.WARN, f"link fell back: {detail}",
                           "reseat or replace the QSFP cable (200G-rated)", data)
    return CheckResult(label, CHECK, Level.PASS, detail, "", data)


def link_checks(inv: InventoryModel, facts: dict[str, NodeFacts]) -> list[CheckResult]:
    """A row per link with at least one end read."""
    topo = topology.of(inv)
    out = []
    for i, seg in enumerate(topo.segments):
        for a, b in seg.pairs():
            if a.node in facts or b.node in facts:
                out.append(_pair(a, b, seg, i, facts, inv.fabric.mtu, inv.fabric.link_speed_mbps))
    return out
