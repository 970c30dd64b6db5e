"""How the nodes are cabled, as data: which addressed fabric interfaces each node has, which
of them share a subnet, and what is inconsistent. Pure; `schema.InventoryModel` asks
`problems()` at load, everything else asks `of(inv)`.

Two families (NVIDIA dgx-spark-playbooks: connect-two-sparks, multi-sparks-through-switch,
connect-three-sparks; eugr/spark-vllm-docker docs/NETWORKING.md):

- **direct** (two nodes, one cable) and **switch** (N nodes, one QSFP port each into a
  switch): every node has the same *rails* (the two twins of its cabled port; `nodes[].rails`
  when a node is cabled on the other port), and rail r of every node shares one subnet.
  A segment per rail; every pair of nodes meets on it.
- **ring** (each node's two ports to its two neighbours, closed) and **mesh** (every pair of
  nodes cabled; three Sparks): each cable twin is a `fabric.links` entry with two ends on a
  subnet of its own, so no fabric address reaches every node. `fabric_ip` is then the
  management address (NCCL's bootstrap, Ray and vLLM use it, as NVIDIA's ring setup and
  eugr's launcher do), carried by `fabric.bootstrap_interface` (default enP7s7).

Inferred when unambiguous: no links -> direct for two nodes, switch for more (unless one
rail's addresses sit on different subnets: then a ring may be meant, and the error says so);
links -> mesh when every pair of nodes is cabled, ring when they form one cycle.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from dgxcluster.inventory.schema import InventoryModel, Link, NodeSpec, Rail

Kind = Literal["single", "direct", "switch", "ring", "mesh"]
Problem = tuple[tuple[str | int, ...], str]
#: The management port of a DGX Spark: what carries fabric_ip on a ring or mesh.
MANAGEMENT_INTERFACE = "enP7s7"
#: NCCL_IB_SUBNET_PREFIX_LEN's default (NCCL 2.30.7 src/transport/net_ib/connect.cc).
NCCL_SUBNET_PREFIX_DEFAULT = 24


def spark_rdma_name(interface: str) -> str | None:
    """The RDMA device rdma-core names after a CX-7 net device: enp1s0f0np0 -> rocep1s0f0,
    enP2p1s0f1np1 -> roceP2p1s0f1 (the pairs `ibdev2netdev` prints on a DGX Spark)."""
    m = re.fullmatch(r"en(P?\d*p\d+s\d+f\d+)np\d+", interface)
    return f"roce{m.group(1)}" if m else None


@dataclass(frozen=True)
class Port:
    """One addressed fabric interface of a node."""

    node: str
    interface: str
    rdma_device: str | None
    address: IPv4Address | None  # None: a rail the inventory gives no address (no rail_ips)
    network: IPv4Network | None

    def label(self) -> str:
        return f"{self.node}:{self.interface}"


@dataclass(frozen=True)
class Segment:
    """A subnet the fabric shares: a rail of a direct/switch fabric (every node), or one cable
    twin of a ring or mesh (its two ends). `key` is where the inventory sets it."""

    name: str
    network: IPv4Network | None
    ports: tuple[Port, ...]
    key: tuple[str | int, ...]

    def pairs(self) -> list[tuple[Port, Port]]:
        """Every pair of its ports that both have an address (what can be pinged)."""
        ps = [p for p in self.ports if p.address is not None]
        return [(ps[i], ps[j]) for i in range(len(ps)) for j in range(i + 1, len(ps))]


@dataclass(frozen=True)
class Topology:
    kind: Kind
    inferred: bool
    nodes: tuple[str, ...]
    segments: tuple[Segment, ...]
    bootstrap: str | None  # ring/mesh: the interface carrying fabric_ip; None: the first rail

    @property
    def point_to_point(self) -> bool:
        """Ring or mesh: every cable its own subnet, no fabric address reaches every node."""
        return self.kind in ("ring", "mesh")

    def ports(self, node: str) -> list[Port]:
        """The node's fabric interfaces, in rail (or link) order, each once."""
        seen: dict[str, Port] = {}
        for seg in self.segments:
            for p in seg.ports:
                if p.node == node:
                    seen.setdefault(p.interface, p)
        return list(seen.values())

    def rdma_devices(self, node: str) -> list[str]:
        return [p.rdma_device for p in self.ports(node) if p.rdma_device]

    def bootstrap_interface(self, node: str) -> str:
        """The interface NCCL's bootstrap, Gloo and Ray use on `node`."""
        if self.bootstrap:
            return self.bootstrap
        ports = self.ports(node)
        return ports[0].interface if ports else MANAGEMENT_INTERFACE

    def pairs(self) -> list[tuple[Port, Port, Segment]]:
        """Every pair of ports that share a segment: all pairs on a switch, each cable on a ring."""
        return [(a, b, seg) for seg in self.segments for a, b in seg.pairs()]

    def links_of(self, node: str) -> list[tuple[Port, Port, int]]:
        """(the node's port, the peer's port, segment index) for every link of `node`: what
        it pings, both ends addressed."""
        out = []
        for i, seg in enumerate(self.segments):
            for a, b in seg.pairs():
                for mine, peer in ((a, b), (b, a)):
                    if mine.node == node:
                        out.append((mine, peer, i))
        return out

    def neighbours(self, node: str) -> set[str]:
        return {q.node for a, b, _ in self.pairs() for p, q in ((a, b), (b, a)) if p.node == node}

    @property
    def prefix_length(self) -> int:
        lens = {s.network.prefixlen for s in self.segments if s.network is not None}
        return lens.pop() if len(lens) == 1 else NCCL_SUBNET_PREFIX_DEFAULT


# -- building it -----------------------------------------------------------------------------

def node_rails(inv: InventoryModel, node: NodeSpec) -> list[Rail]:
    """A direct/switch node's rails: its own `rails`, else fabric.rails."""
    return list(node.rails) if node.rails is not None else list(inv.fabric.rails)


def link_rdma(link: Link, end: int) -> str | None:
    e = link.ends[end]
    return e.rdma_device or spark_rdma_name(e.interface)


def _rail_segments(inv: InventoryModel) -> tuple[Segment, ...]:
    segs = []
    width = max(len(node_rails(inv, n)) for n in inv.nodes)
    for r in range(width):
        ports = []
        for n in inv.nodes:
            rails, addrs = node_rails(inv, n), n.rail_addresses
            if r >= len(rails):
                continue
            addr = addrs[r] if r < len(addrs) else None
            net = (IPv4Network(f"{addr}/{inv.fabric.prefix_length}", strict=False)
                   if addr is not None else None)
            ports.append(Port(n.name, rails[r].interface, rails[r].rdma_device, addr, net))
        if ports:
            nets = [p.network for p in ports if p.network is not None]
            net = max(set(nets), key=nets.count) if nets else None
            segs.append(Segment(f"rail {r}", net, tuple(ports), ("fabric", "rails", r)))
    return tuple(segs)


def _link_segments(inv: InventoryModel) -> tuple[Segment, ...]:
    segs = []
    for i, link in enumerate(inv.fabric.links):
        ports = tuple(Port(e.node, e.interface, link_rdma(link, j), e.address, link.subnet)
                      for j, e in enumerate(link.ends))
        segs.append(Segment(f"link {i}", link.subnet, ports, ("fabric", "links", i)))
    return tuple(segs)


def _edges(inv: InventoryModel) -> set[frozenset[str]]:
    return {frozenset(e.node for e in link.ends) for link in inv.fabric.links
            if len({e.node for e in link.ends}) == 2}


def _graph_kind(names: list[str], edges: set[frozenset[str]]) -> Kind | None:
    """mesh (every pair cabled), ring (one cycle through every node), or None."""
    n = len(names)
    if n >= 3 and len(edges) == n * (n - 1) // 2:
        return "mesh"
    degree = {name: sum(1 for e in edges if name in e) for name in names}
    if n >= 3 and len(edges) == n and all(d == 2 for d in degree.values()) \
            and len(_reachable(names[0], edges)) == n:
        return "ring"
    return None


def _reachable(start: str, edges: set[frozenset[str]]) -> set[str]:
    seen, todo = {start}, [start]
    while todo:
        cur = todo.pop()
        for e in edges:
            if cur in e:
                for other in e - {cur}:
                    if other not in seen:
                        seen.add(other)
                        todo.append(other)
    return seen


def _kind(inv: InventoryModel) -> tuple[Kind, bool]:
    declared = inv.fabric.topology
    if declared is not None:
        return declared, False
    if len(inv.nodes) == 1:
        return "single", True
    if inv.fabric.links:
        found = _graph_kind(inv.names, _edges(inv))
        return (found or "ring"), True
    return ("direct" if len(inv.nodes) == 2 else "switch"), True


def of(inv: InventoryModel) -> Topology:
    """The topology of a validated inventory (problems() is empty for it)."""
    kind, inferred = _kind(inv)
    if kind in ("ring", "mesh"):
        return Topology(kind, inferred, tuple(inv.names), _link_segments(inv),
                        inv.fabric.bootstrap_interface or MANAGEMENT_INTERFACE)
    return Topology(kind, inferred, tuple(inv.names), _rail_segments(inv),
                    inv.fabric.bootstrap_interface)


# -- what is inconsistent --------------------------------------------------------------------

def problems(inv: InventoryModel) -> list[Problem]:
    """Every inconsistency of the fabric section with the nodes, each at its key."""
    kind, inferred = _kind(inv)
    if kind in ("ring", "mesh"):
        return _link_problems(inv, kind, inferred)
    errors: list[Problem] = []
    if inv.fabric.links:
        errors.append((("fabric", "links"), f"links describe the cables of a ring or mesh, but "
                       f"fabric.topology is {kind}: on a {kind} fabric every node's rail r shares "
                       "one subnet (fabric.rails, nodes[].rail_ips); remove fabric.links or set "
                       "fabric.topology: ring or mesh"))
    if kind == "direct" and len(inv.nodes) != 2:
        errors.append((("fabric", "topology"), f"direct means two nodes joined by one cable; "
                       f"the inventory has {len(inv.nodes)}: use switch"))
    return errors + _rail_problems(inv, inferred)


def _rail_problems(inv: InventoryModel, inferred: bool) -> list[Problem]:
    """Each rail on one subnet (prefix_length); when that fails and nothing says switch, the
    inventory may describe a ring without its links: say both."""
    errors: list[Problem] = []
    for seg in _rail_segments(inv):
        odd = [p for p in seg.ports if p.network is not None and p.network != seg.network]
        for p in odd:
            i = inv.names.index(p.node)
            r = int(seg.key[-1])
            key: tuple[str | int, ...] = (("nodes", i, "fabric_ip") if r == 0
                                          and inv.nodes[i].rail_ips is None
                                          else ("nodes", i, "rail_ips", r))
            where = ", ".join(f"{q.node} {q.address}" for q in seg.ports if q.network == seg.network)
            if inferred and len(inv.nodes) > 2:
                errors.append((key, f"{p.address} is not in {seg.network}, the subnet of {seg.name} "
                               f"({where}): cannot tell the topology. Through a switch, put every "
                               f"node's {seg.name} address in one subnet; for a ring or mesh, "
                               "describe each cable in fabric.links and set fabric.topology"))
            else:
                errors.append((key, f"{p.address} is not in {seg.network}, the subnet every "
                               f"node's {seg.name} shares ({where}); fabric.prefix_length is "
                               f"{inv.fabric.prefix_length}"))
    return errors


def _link_problems(inv: InventoryModel, kind: Kind, inferred: bool) -> list[Problem]:
    links = inv.fabric.links
    if not links:
        return [(("fabric", "topology"), f"a {kind} needs fabric.links: each cable twin with its "
                 "two ends (node, interface, address) and its own subnet")]
    names = set(inv.names)
    errors = _link_end_problems(inv, names)
    for i, n in enumerate(inv.nodes):
        if n.rail_ips is not None:
            errors.append((("nodes", i, "rail_ips"), f"on a {kind} the addresses of the fabric "
                           "interfaces come from fabric.links; remove rail_ips"))
        if n.rails is not None:
            errors.append((("nodes", i, "rails"), f"on a {kind} each node's interfaces come from "
                           "fabric.links; remove rails"))
        taken = [(j, k) for j, link in enumerate(links) for k, e in enumerate(link.ends)
                 if e.node == n.name and e.address == n.fabric_ip]
        if taken:
            j, k = taken[0]
            errors.append((("nodes", i, "fabric_ip"), f"{n.fabric_ip} is the address of "
                           f"fabric.links[{j}].ends[{k}], which only its cable's other end "
                           f"reaches: on a {kind} fabric_ip is the node's management address "
                           f"(on {inv.fabric.bootstrap_interface or MANAGEMENT_INTERFACE}), "
                           "reached by every node"))
    if errors:
        return errors
    return _graph_problems(inv, kind, inferred) + _subnet_problems(inv)


def _link_end_problems(inv: InventoryModel, names: set[str]) -> list[Problem]:
    errors: list[Problem] = []
    used: dict[tuple[str, str], int] = {}
    for i, link in enumerate(inv.fabric.links):
        if link.ends[0].node == link.ends[1].node:
            errors.append((("fabric", "links", i, "ends"), f"both ends are on {link.ends[0].node}: "
                           "a cable joins two nodes"))
        for j, e in enumerate(link.ends):
            at: tuple[str | int, ...] = ("fabric", "links", i, "ends", j)
            if e.node not in names:
                errors.append(((*at, "node"), f"names no node: {e.node!r} "
                               f"(nodes: {', '.join(inv.names)})"))
            if e.address not in link.subnet:
                errors.append(((*at, "address"), f"{e.address} is outside the link's subnet "
                               f"{link.subnet}"))
            elif e.address in (link.subnet.network_address, link.subnet.broadcast_address):
                errors.append(((*at, "address"), f"{e.address} is the network or broadcast "
                               f"address of {link.subnet}"))
            if link_rdma(link, j) is None:
                errors.append(((*at, "rdma_device"), f"cannot tell the RDMA device of "
                               f"{e.interface}: set rdma_device"))
            if (e.node, e.interface) in used:
                errors.append(((*at, "interface"), f"{e.node}'s {e.interface} is already an end of "
                               f"fabric.links[{used[(e.node, e.interface)]}]: one interface, "
                               "one cable"))
            used.setdefault((e.node, e.interface), i)
        if link.ends[0].address == link.ends[1].address:
            errors.append((("fabric", "links", i, "ends", 1, "address"),
                           f"{link.ends[1].address} is also the other end's address"))
    return errors


def _graph_problems(inv: InventoryModel, kind: Kind, inferred: bool) -> list[Problem]:
    edges = _edges(inv)
    head = inv.head or inv.nodes[0].name
    reach = _reachable(head, edges)
    errors: list[Problem] = []
    for i, n in enumerate(inv.nodes):
        if n.name not in reach:
            errors.append((("nodes", i), f"{n.name} has no path to the head {head} through "
                           "fabric.links: add the cable that joins it"))
    if errors:
        return errors
    found = _graph_kind(inv.names, edges)
    shape = ", ".join(sorted("-".join(sorted(e)) for e in edges))
    if found is None:
        why = ("form neither a ring (one cycle through every node) nor a mesh (every pair "
               f"cabled): {shape}; NCCL's RDMA cannot be routed through a node")
        return [(("fabric", "links") if inferred else ("fabric", "topology"), f"the cables {why}")]
    if kind == "mesh" and found != "mesh":
        return [(("fabric", "topology"), f"mesh means every pair of nodes is cabled; the links "
                 f"form a ring ({shape}): set fabric.topology: ring")]
    return []


def _subnet_problems(inv: InventoryModel) -> list[Problem]:
    """Each link its own subnet (twins of one cable may share one, as NVIDIA's ring playbook
    addresses them); one prefix length (NCCL_IB_SUBNET_PREFIX_LEN is one value per process)."""
    errors: list[Problem] = []
    owner: dict[IPv4Network, tuple[int, frozenset[str]]] = {}
    addresses: dict[IPv4Address, str] = {n.fabric_ip: f"nodes[{i}].fabric_ip"
                                         for i, n in enumerate(inv.nodes)}
    for i, link in enumerate(inv.fabric.links):
        pair = frozenset(e.node for e in link.ends)
        for other, (j, other_pair) in owner.items():
            if other.overlaps(link.subnet) and (other != link.subnet or other_pair != pair):
                errors.append((("fabric", "links", i, "subnet"), f"{link.subnet} overlaps "
                               f"fabric.links[{j}]'s {other}, which joins {', '.join(sorted(other_pair))}:"
                               " each cable needs its own subnet (Linux would route one cable's "
                               "traffic out of the other)"))
        owner.setdefault(link.subnet, (i, pair))
        for k, e in enumerate(link.ends):
            if e.address in addresses:
                errors.append((("fabric", "links", i, "ends", k, "address"),
                               f"{e.address} is also {addresses[e.address]}"))
            addresses[e.address] = f"fabric.links[{i}].ends[{k}].address"
    lens = sorted({link.subnet.prefixlen for link in inv.fabric.links})
    if len(lens) > 1:
        errors.append((("fabric", "links"), f"the links' subnets have prefix lengths "
                       f"{', '.join(f'/{x}' for x in lens)}: use one (NCCL's subnet-aware routing "
                       "compares addresses under one NCCL_IB_SUBNET_PREFIX_LEN)"))
    return errors


def describe(topo: Topology) -> str:
    """One line for humans: 'ring of 3 nodes (inferred), 6 links'."""
    how = " (inferred)" if topo.inferred else ""
    if topo.point_to_point:
        return f"{topo.kind} of {len(topo.nodes)} nodes{how}, {len(topo.segments)} links"
    return f"{topo.kind}{how}, {len(topo.nodes)} node(s), {len(topo.segments)} rail(s)"
