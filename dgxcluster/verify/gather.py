"""Read one node's fabric facts over its connection: RDMA devices, net devices, speeds, GPU.

Every tool runs through `sh` with the sbin directories appended to PATH (ethtool lives in
/usr/sbin, which a non-root SSH login often lacks; /usr/local/sbin stays first, which is
where the testbed puts simulated hardware). A tool that is not installed (exit 127) is
recorded as missing, output no parser recognises as an error; neither raises.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from dgxcluster.core.progress import NullProgress, Progress
from dgxcluster.facts import (
    ParseError,
    ethtool,
    ibdev2netdev,
    ibv_devinfo,
    ipaddr,
    netplan,
    nvidia_smi,
    oomguard,
)
from dgxcluster.facts import ping as ping_fact
from dgxcluster.inventory import topology
from dgxcluster.inventory.schema import InventoryModel
from dgxcluster.remote.command import shell
from dgxcluster.remote.connection import Connection
from dgxcluster.remote.result import Result

T = TypeVar("T")
SIM_MARK = "simulated hardware"
_PATH = 'PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"; export PATH; exec "$@"'
TOOL_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Fact(Generic[T]):
    """A parsed tool output, or why there is none."""

    value: T | None = None
    error: str | None = None  # ran but failed, or output not understood
    missing: bool = False  # the tool is not installed

    @property
    def ok(self) -> bool:
        return self.value is not None


@dataclass
class NodeFacts:
    node: str
    simulated: bool = False
    devinfo: Fact[ibv_devinfo.DevInfo] = field(default_factory=Fact)
    links: Fact[list[ibdev2netdev.Link]] = field(default_factory=Fact)
    links_source: str = "ibdev2netdev"
    sysfs_ports: list[ibdev2netdev.SysfsPort] = field(default_factory=list)
    sysfs_read: bool = False
    ifaces: Fact[dict[str, ipaddr.Interface]] = field(default_factory=Fact)
    speeds: dict[str, Fact[ethtool.LinkSettings]] = field(default_factory=dict)
    smi: Fact[nvidia_smi.SmiInfo] = field(default_factory=Fact)
    #: (peer node, segment index: rail r of a switch, link i of a ring) -> this node's ping
    pings: dict[tuple[str, int], Fact[ping_fact.PingResult]] = field(default_factory=dict)
    netplan: Fact[netplan.Netplan] = field(default_factory=Fact)
    oom_guards: Fact[list[oomguard.Guard]] = field(default_factory=Fact)


def run_tool(conn: Connection, argv: list[str], timeout: float = TOOL_TIMEOUT_S) -> Result:
    return conn.run(shell(_PATH, *argv), timeout=timeout)


def _text(res: Result) -> str:
    return res.stdout if res.stdout.strip() else res.stderr


def _fact(res: Result, parse: Callable[[str], T], text: str | None = None) -> Fact[T]:
    if res.exit_code == 127:
        return Fact(missing=True, error=(res.stderr.strip() or "command not found"))
    try:
        return Fact(parse(_text(res) if text is None else text))
    except ParseError as exc:
        return Fact(error=str(exc))


def gather_node(conn: Connection, inv: InventoryModel,
                progress: Progress | None = None) -> NodeFacts:
    """Everything the per-node checks need, in one pass over one connection."""
    prog = progress or NullProgress()
    facts = NodeFacts(conn.node)

    def tool(argv: list[str]) -> Result:
        res = run_tool(conn, argv)
        if SIM_MARK in res.stderr:
            facts.simulated = True
        return res

    prog.status(conn.node, "reading RDMA devices")
    facts.devinfo = _fact(tool(ibv_devinfo.ARGV), ibv_devinfo.parse)
    facts.links = _fact(tool(ibdev2netdev.ARGV), ibdev2netdev.parse)
    if not facts.links.ok or not facts.devinfo.ok:
        res = tool(ibdev2netdev.SYSFS_ARGV)
        try:
            sys_links, facts.sysfs_ports = ibdev2netdev.parse_sysfs(res.stdout)
            facts.sysfs_read = True
            if not facts.links.ok:
                facts.links = Fact(sys_links)
                facts.links_source = "sysfs"
        except ParseError as exc:
            if not facts.links.ok:
                facts.links = Fact(error=str(exc))
    prog.status(conn.node, "reading interfaces")
    res = tool(ipaddr.ARGV)
    facts.ifaces = _fact(res, ipaddr.parse)
    if not facts.ifaces.ok and not facts.ifaces.missing:
        text_res = tool(ipaddr.TEXT_ARGV)
        alt = _fact(text_res, ipaddr.parse_text)
        if alt.ok:
            facts.ifaces = alt
    present = facts.ifaces.value or {}
    for port in topology.of(inv).ports(conn.node):
        if port.interface in present:
            facts.speeds[port.interface] = _fact(tool(ethtool.argv(port.interface)), ethtool.parse)
    prog.status(conn.node, "reading GPU and netplan")
    facts.smi = _fact(tool(nvidia_smi.ARGV), nvidia_smi.parse)
    facts.netplan = _fact(conn.run(netplan.ARGV, timeout=TOOL_TIMEOUT_S), netplan.parse)
    facts.oom_guards = _fact(conn.run(oomguard.ARGV, timeout=TOOL_TIMEOUT_S), oomguard.parse)
    prog.status(conn.node, "facts read")
    return facts


def ping_targets(inv: InventoryModel, node: str) -> list[tuple[str, str, int, str]]:
    """(local interface, peer address, segment index, peer node) for every pair of ports
    that share a segment with one of `node`'s: all peers on a switch, each cable on a ring."""
    return [(mine.interface, str(peer.address), i, peer.node)
            for mine, peer, i in topology.of(inv).links_of(node)]


def ping_peers(conn: Connection, inv: InventoryModel, facts: NodeFacts,
               progress: Progress | None = None) -> NodeFacts:
    """Don't-fragment pings sized to fabric.mtu over every link of this node, all at once
    (one round trip: `ping.BATCH_SCRIPT`)."""
    prog = progress or NullProgress()
    targets = ping_targets(inv, conn.node)
    if not targets:
        return facts
    prog.status(conn.node, f"pinging {len(targets)} peer address(es)")
    res = run_tool(conn, shell(ping_fact.BATCH_SCRIPT, *ping_fact.batch_args(
        [(iface, addr) for iface, addr, _, _ in targets], inv.fabric.mtu)), timeout=30)
    blocks = ping_fact.split_batch(res.stdout, len(targets))
    for i, (_iface, _addr, seg, peer) in enumerate(targets):
        block = blocks.get(i)
        if block is None:
            facts.pings[(peer, seg)] = Fact(error=f"no result ({(res.stderr or res.stdout).strip()[:200]})")
        elif ping_fact.not_installed(block):
            facts.pings[(peer, seg)] = Fact(missing=True, error="ping not installed")
        else:
            try:
                facts.pings[(peer, seg)] = Fact(ping_fact.parse(block))
            except ParseError as exc:
                facts.pings[(peer, seg)] = Fact(error=str(exc))
    prog.status(conn.node, "pings done")
    return facts
