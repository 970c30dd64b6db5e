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


@dataclass
class Instance:
    """One testbed (several can run side by side, each with its own name and subnets)."""

    name: str
    index: int
    nodes: int = 0
    docker: bool = False
    mtu: int = 9000
    users: list[str] = field(default_factory=list)  # SSH users besides root (users.py)

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
        return f"tb{self.index}{kind}"  # tb3m, tb3r0, tb3r1

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
