"""Checks across nodes: unique fabric addresses, one subnet per rail, one MTU per rail, every
node cabled on the same QSFP port. Pure: the inventory and each reachable node's facts in.
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network

from dgxcluster.inventory.schema import InventoryModel, NodeSpec
from dgxcluster.verify.gather import NodeFacts
from dgxcluster.verify.rdma import cabled_ports, port_key, rdma_view
from dgxcluster.verify.results import CLUSTER, CheckResult, Checks

DEFAULT_PREFIX = 24


def cluster_checks(inv: InventoryModel, nodes: list[NodeSpec],
                   facts: dict[str, NodeFacts]) -> list[CheckResult]:
    c = Checks(CLUSTER)
    _unique(c, nodes)
    _subnets(c, inv, nodes, facts)
    _mtu_match(c, inv, facts)
    _cabling(c, inv, facts)
    return c.results


def _unique(c: Checks, nodes: list[NodeSpec]) -> None:
    seen: dict[IPv4Address, str] = {}
    dups = []
    for n in nodes:
        for r, ip in enumerate(n.rails):
            where = f"{n.name} rail {r}"
            if ip in seen:
                dups.append(f"{ip} ({seen[ip]} and {where})")
            seen.setdefault(ip, where)
    if dups:
        c.fail("fabric-ips-unique", "duplicate fabric addresses: " + "; ".join(dups),
               "give every node its own fabric_ip and rail_ips")
    else:
        c.ok("fabric-ips-unique", f"{len(seen)} fabric addresses, all distinct")


def _prefix(facts: NodeFacts | None, ip: IPv4Address) -> int:
    for i in ((facts.ifaces.value or {}).values() if facts else []):
        for a in i.ipv4:
            if a.ip == ip:
                return a.network.prefixlen
    return DEFAULT_PREFIX


def _subnets(c: Checks, inv: InventoryModel, nodes: list[NodeSpec],
             facts: dict[str, NodeFacts]) -> None:
    bad, good, shared = [], [], []
    rail_nets: dict[int, set[IPv4Network]] = {}
    for r, rail in enumerate(inv.fabric.rails):
        nets: dict[IPv4Network, list[str]] = {}
        for n in nodes:
            if r >= len(n.rails):
                continue
            ip = n.rails[r]
            net = IPv4Network(f"{ip}/{_prefix(facts.get(n.name), ip)}", strict=False)
            nets.setdefault(net, []).append(f"{n.name} {ip}")
        rail_nets[r] = set(nets)
        if len(nets) > 1:
            bad.append(f"rail {r} ({rail.interface}): " + "; ".join(
                f"{net}: {', '.join(v)}" for net, v in nets.items()))
        elif nets:
            good.append(f"rail {r} {next(iter(nets))}")
    for a in rail_nets:
        for b in rail_nets:
            if a < b and rail_nets[a] & rail_nets[b]:
                shared.append(f"rails {a} and {b} share {', '.join(map(str, rail_nets[a] & rail_nets[b]))}")
    if bad:
        c.fail("rail-subnets", "addresses of one rail on different subnets: " + " | ".join(bad),
               "put every node's address of a rail in one subnet (e.g. 192.168.100.x/24 on rail 0, "
               "192.168.101.x/24 on rail 1)")
    elif shared:
        c.warn("rail-subnets", "; ".join(shared) + ": Linux may answer on the wrong twin",
               "give each rail its own subnet (NVIDIA's playbook: 192.168.100.0/24 and .101.0/24)")
    else:
        c.ok("rail-subnets", ", ".join(good))


def _mtu_match(c: Checks, inv: InventoryModel, facts: dict[str, NodeFacts]) -> None:
    """One MTU per rail. Different MTUs all at or above fabric.mtu only WARN (e.g. 9216 on one
    node, 9000 on the other): traffic sized to fabric.mtu fits both ends."""
    bad, good = [], []
    below = False
    for rail in inv.fabric.rails:
        mtus: dict[int | None, list[str]] = {}
        for name, f in facts.items():
            i = (f.ifaces.value or {}).get(rail.interface)
            if i is not None:
                mtus.setdefault(i.mtu, []).append(name)
        if len(mtus) > 1:
            below = below or any(m is None or m < inv.fabric.mtu for m in mtus)
            bad.append(f"{rail.interface}: " + ", ".join(
                f"{', '.join(v)} {m}" for m, v in sorted(mtus.items(), key=lambda kv: -len(kv[1]))))
        elif mtus:
            good.append(f"{rail.interface} {next(iter(mtus))} on {len(facts)} node(s)")
    fix = f"set the same MTU ({inv.fabric.mtu}) on every node's fabric interfaces"
    if bad and below:
        c.fail("mtu-match", "MTU differs between nodes: " + "; ".join(bad), fix)
    elif bad:
        c.warn("mtu-match", "MTU differs between nodes, all at least fabric.mtu "
               f"{inv.fabric.mtu}: " + "; ".join(bad), fix)
    elif good:
        c.ok("mtu-match", ", ".join(good))
    else:
        c.fail("mtu-match", "no fabric interface found on any node", "see interfaces")


def _cabling(c: Checks, inv: InventoryModel, facts: dict[str, NodeFacts]) -> None:
    """Every node must have the port of fabric.rails active (one rails setting serves all
    nodes); a node with both ports cabled (a ring of three) is fine."""
    want = sorted({p for r in inv.fabric.rails if r.rdma_device
                   for p in [port_key(r.rdma_device, r.interface)] if p})
    active: dict[str, list[str]] = {}
    unknown = []
    for name, f in facts.items():
        devs = rdma_view(f)
        if not devs:
            unknown.append(name)
        else:
            active[name] = cabled_ports(devs)
    if not active:
        c.fail("cabling", f"no RDMA devices on {', '.join(unknown) or 'any node'}",
               "see rdma-devices")
        return
    shown = "; ".join(f"{n}: {', '.join(p) or 'no active port'}" for n, p in active.items())
    if want:
        off = [n for n, p in active.items() if not set(want) <= set(p)]
    else:
        common = set.intersection(*(set(p) for p in active.values()))
        off = [] if common else list(active)
    if off:
        c.fail("cabling", f"not cabled on {' and '.join(want) or 'a common port'}: "
               f"{', '.join(off)} (active ports: {shown})",
               "cable every node on the same QSFP port (fabric.rails names one port's twins "
               "for all nodes), or set fabric.rails to the port they share")
    else:
        extra = f"; no RDMA devices: {', '.join(unknown)}" if unknown else ""
        c.ok("cabling", f"active ports: {shown}{extra}")
