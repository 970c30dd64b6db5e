"""Where everything lives and which addresses each node gets. Pure: no side effects."""

from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

STATE = Path("/var/lib/dgxtb")
NSDIR = Path("/run/dgxtb/ns")
CACHE = Path("/var/cache/dgxtb")

MGMT_IF = "enP7s7"  # the DGX Spark 10GbE management port
RAIL_IFS = ("enp1s0f1np1", "enP2p1s0f1np1")  # the two twins of CX-7 QSFP port 1
RAIL_RDMA = ("rocep1s0f1", "roceP2p1s0f1")
NAME_RE = re.compile(r"^[a-z][a-z0-9]{0,5}$")
TOPOLOGIES = ("switch", "direct", "ring", "mesh")
MAX_CABLES = 16  # ring subnets 10.220-251.<index>: two per cable


def port_ifs(port: int) -> tuple[str, str]:
    """The two twins of CX-7 QSFP port `port` on a DGX Spark (enp1s0f<p>np<p>, enP2p1s0f<p>np<p>)."""
    return f"enp1s0f{port}np{port}", f"enP2p1s0f{port}np{port}"


def port_rdma(port: int) -> tuple[str, str]:
    return f"rocep1s0f{port}", f"roceP2p1s0f{port}"


@dataclass(frozen=True)
class Member:
    """One node interface on a wire."""

    node: int  # 1-based
    ifname: str
    kind: str  # the host-side veth suffix: a/b (switch rails), <port><a|b> (ring ports)
    ip: str  # address/prefix


@dataclass(frozen=True)
class Wire:
    """One bridge: a rail of the switch (every node), or one twin of a ring's cable (two)."""

    key: str  # bridge suffix: r0, r1 (switch), c<k>a, c<k>b (cable k)
    members: tuple[Member, ...]
    cable: tuple[int, int] | None = None  # the two nodes a ring's cable joins


@dataclass
class Instance:
    """One testbed (several can run side by side, each with its own name and subnets)."""

    name: str
    index: int
    nodes: int = 0
    docker: bool = False
    mtu: int = 9000
    users: list[str] = field(default_factory=list)  # SSH users besides root (users.py)
    topology: str = "switch"  # switch/direct: a bridge per rail; ring/mesh: one per cable twin
    ports: list[int] = field(default_factory=list)  # switch/direct: each node's QSFP port
    explicit: bool = False  # --topology given: the inventory says fabric.topology

    @property
    def root(self) -> Path:
        return STATE / self.name

    @property
    def key(self) -> Path:
        return self.root / "id_ed25519"

    def save(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "instance.json").write_text(json.dumps(asdict(self)) + "\n")

    @classmethod
    def load(cls, name: str) -> Instance | None:
        p = STATE / name / "instance.json"
        if not p.exists():
            return None
        data = json.loads(p.read_text())
        # A testbed made by a newer scripts/testbed may carry keys this one does not know
        # (several testbeds share /var/lib/dgxtb): keep the ones it knows.
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})

    def bridge(self, kind: str) -> str:
        return f"tb{self.index}{kind}"  # tb3m, tb3r0, tb3r1, tb3c0a

    def port_of(self, i: int) -> int:
        """Switch/direct: the QSFP port node i is cabled on (port 1 unless --ports says)."""
        return self.ports[i - 1] if i - 1 < len(self.ports) else 1

    def wiring(self) -> list[Wire]:
        return wiring(self)

    def node(self, i: int) -> Node:
        return Node(self, i)

    def all_nodes(self) -> list[Node]:
        return [Node(self, i) for i in range(1, self.nodes + 1)]

    def find(self, name: str) -> Node:
        for n in self.all_nodes():
            if n.name == name:
                return n
        raise KeyError(name)


@dataclass(frozen=True)
class Node:
    inst: Instance
    i: int

    @property
    def name(self) -> str:
        return f"node{self.i}"

    @property
    def netns(self) -> str:
        return f"dgxtb-{self.inst.name}-{self.name}"

    @property
    def dir(self) -> Path:
        return self.inst.root / self.name

    @property
    def mnt_ns(self) -> Path:
        return NSDIR / f"{self.inst.name}-{self.name}.mnt"

    @property
    def uts_ns(self) -> Path:
        return NSDIR / f"{self.inst.name}-{self.name}.uts"

    @property
    def mgmt_ip(self) -> str:
        return f"10.210.{self.inst.index}.{10 + self.i}"

    @property
    def mgmt_ip6(self) -> str:
        """The management port's IPv6 address (a ULA; the inventory uses the IPv4 one, tests
        of IPv6 management addresses use this), as `ip addr` prints it."""
        return _ip6(f"fd00:210:{self.inst.index}::{10 + self.i}")

    def rail_ip(self, rail: int) -> str:
        return f"10.{211 + rail}.{self.inst.index}.{10 + self.i}"

    @property
    def fabric_ip(self) -> str:
        """Switch/direct: rail 0's address; ring/mesh: the management address (no fabric
        address reaches every node there)."""
        return self.mgmt_ip if self.inst.topology in ("ring", "mesh") else self.rail_ip(0)

    def members(self) -> list[tuple[Wire, Member]]:
        return [(w, m) for w in self.inst.wiring() for m in w.members if m.node == self.i]

    def host_veth(self, kind: str) -> str:
        return f"tb{self.inst.index}n{self.i}{kind}"  # kind: m, a (rail 0), b (rail 1)

    @property
    def docker_sock(self) -> Path:
        return self.dir / "run" / "docker.sock"

    @property
    def sbin(self) -> Path:
        """Bind-mounted on the node's /usr/local/sbin: where simulated hardware tools go."""
        return self.dir / "sbin"

    def nsenter(self) -> list[str]:
        return ["nsenter", f"--mount={self.mnt_ns}", f"--uts={self.uts_ns}",
                f"--net=/run/netns/{self.netns}", "--"]


def cable_ip(inst: Instance, cable: int, twin: int, node: int) -> str:
    return f"10.{220 + 2 * cable + twin}.{inst.index}.{10 + node}"


def wiring(inst: Instance) -> list[Wire]:
    """How the testbed's fabric is cabled. switch/direct: rail r of every node on one bridge
    (twin r of the node's port, 10.21{1+r}.<index>.<10+i>/24). ring/mesh: node i's port 0 to
    node i+1's port 1, closing the ring (NVIDIA's connect-three-sparks and eugr's ring
    cabling); each twin of a cable its own bridge and /24."""
    n = inst.nodes
    if inst.topology in ("ring", "mesh"):
        wires = []
        for k in range(n if n > 2 else 0):
            a, b = k + 1, (k + 1) % n + 1
            for t, suffix in enumerate("ab"):
                wires.append(Wire(f"c{k}{suffix}", (
                    Member(a, port_ifs(0)[t], f"0{suffix}", f"{cable_ip(inst, k, t, a)}/24"),
                    Member(b, port_ifs(1)[t], f"1{suffix}", f"{cable_ip(inst, k, t, b)}/24")),
                    (a, b)))
        return wires
    return [Wire(f"r{t}", tuple(
        Member(i, port_ifs(inst.port_of(i))[t], suffix, f"10.{211 + t}.{inst.index}.{10 + i}/24")
        for i in range(1, n + 1))) for t, suffix in enumerate("ab")]


def topology_problem(topology: str, n: int, ports: list[int]) -> str | None:
    if topology not in TOPOLOGIES:
        return f"--topology must be one of {', '.join(TOPOLOGIES)}"
    if topology == "direct" and n != 2:
        return "--topology direct joins two nodes with one cable"
    if topology in ("ring", "mesh") and not 3 <= n <= MAX_CABLES:
        return f"a {topology} needs 3 to {MAX_CABLES} nodes"
    if topology == "mesh" and n != 3:
        return "a mesh cables every pair of nodes: with two QSFP ports per Spark, three nodes"
    if ports and (topology in ("ring", "mesh") or len(ports) not in (1, n)
                  or any(p not in (0, 1) for p in ports)):
        return "--ports takes one QSFP port (0 or 1) for every node, or one for all (switch, direct)"
    return None


def mgmt_gateway(inst: Instance) -> str:
    return f"10.210.{inst.index}.1"


def mgmt_gateway6(inst: Instance) -> str:
    return _ip6(f"fd00:210:{inst.index}::1")


def _ip6(text: str) -> str:
    """The canonical (RFC 5952) form `ip addr` prints and `up` compares with: testbed 0's
    `fd00:210:0::1` is `fd00:210::1`."""
    return str(ipaddress.IPv6Address(text))


def instances() -> list[Instance]:
    out = []
    if STATE.exists():
        for p in sorted(STATE.glob("*/instance.json")):
            inst = Instance.load(p.parent.name)
            if inst:
                out.append(inst)
    return out


def allocate(name: str) -> Instance:
    existing = Instance.load(name)
    if existing:
        return existing
    used = {i.index for i in instances()}
    for idx in range(0, 200):
        if idx not in used:
            return Instance(name=name, index=idx)
    raise RuntimeError("no free testbed index")
