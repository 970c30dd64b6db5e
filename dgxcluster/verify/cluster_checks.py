"""Checks across nodes, per topology (`inventory.topology`): unique fabric addresses, each
segment (a rail of a switch, a cable of a ring) on one subnet of its own, one MTU per
segment, and every node cabled where the inventory says. Pure: the inventory and each
reachable node's facts in.

Cabling follows each node's own rails, so asymmetric cabling (port 1 on one node into port
0 on the other, `nodes[].rails`) passes; on a ring or mesh it is judged per cable.
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network

from dgxcluster.inventory import topology
from dgxcluster.inventory.schema import InventoryModel, NodeSpec
from dgxcluster.inventory.topology import Port, Segment, Topology
from dgxcluster.verify.gather import NodeFacts
from dgxcluster.verify.rdma import RdmaDev, cabled_ports, port_key, rdma_view
from dgxcluster.verify.results import CLUSTER, CheckResult, Checks


def cluster_checks(inv: InventoryModel, nodes: list[NodeSpec],
                   facts: dict[str, NodeFacts]) -> list[CheckResult]:
    c = Checks(CLUSTER)
    topo = topology.of(inv)
    names = {n.name for n in nodes}
    _unique(c, topo, nodes)
    _subnets(c, topo, names, facts)
    _mtu_match(c, inv, topo, facts)
    if topo.point_to_point:
        _cabling_links(c, topo, facts)
    else:
        _cabling_rails(c, topo, facts)
    return c.results


def _unique(c: Checks, topo: Topology, nodes: list[NodeSpec]) -> None:
    seen: dict[IPv4Address, str] = {}
    dups = []
    entries = [(p.address, f"{p.node} {p.interface}") for s in topo.segments for p in s.ports
               if p.address is not None]
    if topo.point_to_point:
        entries += [(n.fabric_ip, f"{n.name} fabric_ip") for n in nodes]
    for ip, where in dict.fromkeys(entries):
        if ip in seen and seen[ip] != where:
            dups.append(f"{ip} ({seen[ip]} and {where})")
        seen.setdefault(ip, where)
    if dups:
        c.fail("fabric-ips-unique", "duplicate fabric addresses: " + "; ".join(dups),
               "give every interface its own address")
    else:
        c.ok("fabric-ips-unique", f"{len(seen)} fabric addresses, all distinct")


def live_network(facts: NodeFacts | None, port: Port) -> IPv4Network | None:
    """The subnet the node really puts the port's address in (its live prefix), else the
    inventory's."""
    for i in ((facts.ifaces.value or {}).values() if facts else []):
        for a in i.ipv4:
            if a.ip == port.address:
                return a.network
    return port.network


def _subnets(c: Checks, topo: Topology, names: set[str], facts: dict[str, NodeFacts]) -> None:
    bad, good, shared = [], [], []
    nets: dict[str, set[IPv4Network]] = {}
    for seg in topo.segments:
        found: dict[IPv4Network, list[str]] = {}
        for p in seg.ports:
            net = live_network(facts.get(p.node), p)
            if p.node in names and net is not None:
                found.setdefault(net, []).append(f"{p.node} {p.address}")
        nets[seg.name] = set(found)
        if len(found) > 1:
            bad.append(f"{seg.name} ({_ends(seg)}): " + "; ".join(
                f"{net}: {', '.join(v)}" for net, v in found.items()))
        elif found:
            good.append(f"{seg.name} {next(iter(found))}")
    names_ = list(nets)
    for i, a in enumerate(names_):
        for b in names_[i + 1:]:
            common = nets[a] & nets[b]
            if common:
                shared.append(f"{a} and {b} share {', '.join(map(str, common))}")
    what = "cable" if topo.point_to_point else "rail"
    if bad:
        c.fail("rail-subnets", ("the two ends of a cable are on different subnets: "
                                if topo.point_to_point else
                                "addresses of one rail on different subnets: ") + " | ".join(bad),
               f"put both ends of each {what} in its subnet (the inventory's addresses; "
               "dgxcluster fabric apply writes them)")
    elif shared:
        c.warn("rail-subnets", "; ".join(shared) + ": Linux may answer on the wrong twin",
               f"give each {what} its own subnet (eugr/spark-vllm-docker NETWORKING.md: one per "
               "twin)")
    else:
        c.ok("rail-subnets", ", ".join(good))


def _ends(seg: Segment) -> str:
    return " - ".join(p.label() for p in seg.ports) if len(seg.ports) == 2 \
        else f"{len(seg.ports)} nodes"


def _mtu_match(c: Checks, inv: InventoryModel, topo: Topology,
               facts: dict[str, NodeFacts]) -> None:
    """One MTU per segment. Different MTUs all at or above fabric.mtu only WARN (e.g. 9216 on
    one node, 9000 on the other): traffic sized to fabric.mtu fits both ends."""
    bad, good = [], []
    below = False
    for seg in topo.segments:
        mtus: dict[int | None, list[str]] = {}
        for p in seg.ports:
            f = facts.get(p.node)
            i = (f.ifaces.value or {}).get(p.interface) if f else None
            if i is not None:
                mtus.setdefault(i.mtu, []).append(f"{p.node} {p.interface}")
        if len(mtus) > 1:
            below = below or any(m is None or m < inv.fabric.mtu for m in mtus)
            bad.append(f"{seg.name}: " + ", ".join(
                f"{', '.join(v)} {m}" for m, v in sorted(mtus.items(), key=lambda kv: -len(kv[1]))))
        elif mtus:
            good.append(f"{seg.name} {next(iter(mtus))}")
    fix = f"set the same MTU ({inv.fabric.mtu}) on both ends of every link"
    if bad and below:
        c.fail("mtu-match", "MTU differs between the ends of a link: " + "; ".join(bad), fix)
    elif bad:
        c.warn("mtu-match", "MTU differs between the ends of a link, all at least fabric.mtu "
               f"{inv.fabric.mtu}: " + "; ".join(bad), fix)
    elif good:
        c.ok("mtu-match", ", ".join(good))
    else:
        c.fail("mtu-match", "no fabric interface found on any node", "see interfaces")


def _views(facts: dict[str, NodeFacts]) -> tuple[dict[str, dict[str, RdmaDev]], list[str]]:
    views: dict[str, dict[str, RdmaDev]] = {}
    unknown = []
    for name, f in facts.items():
        devs = rdma_view(f)
        if devs:
            views[name] = devs
        else:
            unknown.append(name)
    return views, unknown


def _cabling_rails(c: Checks, topo: Topology, facts: dict[str, NodeFacts]) -> None:
    """Every node cabled on the port its own rails name (one port may differ per node)."""
    views, unknown = _views(facts)
    if not views:
        c.fail("cabling", f"no RDMA devices on {', '.join(unknown) or 'any node'}",
               "see rdma-devices")
        return
    off, shown = [], []
    for name, devs in views.items():
        want = sorted({k for p in topo.ports(name) if p.rdma_device
                       for k in [port_key(p.rdma_device, p.interface)] if k})
        active = cabled_ports(devs)
        shown.append(f"{name}: {', '.join(active) or 'no active port'}"
                     + (f" (rails on {', '.join(want)})" if want != active else ""))
        if want and not set(want) <= set(active):
            off.append(f"{name} (rails on {', '.join(want)}, active: "
                       f"{', '.join(active) or 'none'})")
    if off:
        c.fail("cabling", f"not cabled where the rails say: {'; '.join(off)}",
               "move the cable to the port the node's rails name, or set nodes[].rails (that "
               "node's port) / fabric.rails to the twins of the port it is cabled on")
    else:
        extra = f"; no RDMA devices: {', '.join(unknown)}" if unknown else ""
        c.ok("cabling", f"active ports: {'; '.join(shown)}{extra}")


def _cabling_links(c: Checks, topo: Topology, facts: dict[str, NodeFacts]) -> None:
    """Every cable twin's two ends have their RDMA port ACTIVE; a pulled cable is named."""
    views, unknown = _views(facts)
    if not views:
        c.fail("cabling", f"no RDMA devices on {', '.join(unknown) or 'any node'}",
               "see rdma-devices")
        return
    down, up = [], 0
    for seg in topo.segments:
        states = []
        for p in seg.ports:
            d = views.get(p.node, {}).get(p.rdma_device or "")
            if p.node in views and (d is None or not d.active):
                states.append(f"{p.label()} {d.state if d else 'missing'}")
        if states:
            down.append(f"{seg.name} ({_ends(seg)}): {', '.join(states)}")
        else:
            up += 1
    if down:
        c.fail("cabling", f"{len(down)} of {len(topo.segments)} links not active: "
               + "; ".join(down),
               "check the QSFP cable of each named link (both ends' ports: port 0 of one "
               "node into port 1 of the next, as fabric.links says)")
    else:
        extra = f"; no RDMA devices: {', '.join(unknown)}" if unknown else ""
        c.ok("cabling", f"all {up} links active at both ends{extra}")
