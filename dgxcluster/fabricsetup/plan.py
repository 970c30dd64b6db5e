"""`fabric plan`: per node, the netplan file the inventory calls for against what the node
has, and what must not be done. Pure: the inventory and a node's `NodeState` in.

A node is *changed* when its file differs (content or mode 0600) or its live addresses/MTU
differ from the file's (someone flushed an address: `netplan apply` puts it back). It is
*refused* when applying would be unsafe or impossible: no root and no passwordless sudo, no
netplan, an interface that carries the SSH session or the default route (the management
interface), or an interface the node does not have.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from ipaddress import IPv4Interface

from dgxcluster.core import netplan
from dgxcluster.fabricsetup.probe import NodeState
from dgxcluster.inventory import topology
from dgxcluster.inventory.schema import InventoryModel

FIX_PRIVILEGE = ("log in as root (nodes[].user / ssh.user), or let the user run `install`, "
                 "`netplan` and `ip` through sudo without a password (a sudoers NOPASSWD rule)")


@dataclass
class NodePlan:
    node: str
    wanted: str
    state: NodeState
    interfaces: list[str]
    live: list[str] = field(default_factory=list)  # live state that differs from `wanted`
    refusals: list[str] = field(default_factory=list)

    @property
    def file_changed(self) -> bool:
        st = self.state
        return not st.exists or st.content != self.wanted or st.mode != netplan.MODE

    @property
    def changed(self) -> bool:
        return self.file_changed or bool(self.live)

    def diff(self) -> str:
        """A unified diff from the node's file to the wanted one ('' when equal)."""
        st = self.state
        if st.exists and st.content == self.wanted:
            return ""
        old = (st.content or "").splitlines(keepends=True) if st.exists else []
        head = f"{self.node}:{netplan.PATH}"
        return "".join(difflib.unified_diff(
            old, self.wanted.splitlines(keepends=True),
            fromfile=head if st.exists else "/dev/null", tofile=f"{head} (inventory)"))

    def summary(self) -> str:
        if self.refusals:
            return "refused: " + "; ".join(self.refusals)
        if not self.changed:
            return f"unchanged: {netplan.PATH} and the live fabric match the inventory"
        parts = []
        st = self.state
        if not st.exists:
            parts.append(f"would create {netplan.PATH}")
        elif st.content != self.wanted:
            parts.append(f"would rewrite {netplan.PATH}")
        elif st.mode != netplan.MODE:
            parts.append(f"would set {netplan.PATH} to mode 0600 (is {st.mode:o})"
                         if st.mode is not None else f"would set {netplan.PATH} to mode 0600")
        parts += self.live
        return "; ".join(parts)


def _live(inv: InventoryModel, node: str, st: NodeState, refusals: list[str]) -> list[str]:
    out = []
    for port in topology.of(inv).ports(node):
        live = st.ifaces.get(port.interface)
        if live is None:
            present = ", ".join(n for n in st.ifaces if n != "lo")
            refusals.append(f"{port.interface} does not exist on {node} (interfaces: {present}); "
                            "check the inventory's rails/links against ibdev2netdev")
            continue
        if port.address is not None and port.network is not None:
            want = IPv4Interface(f"{port.address}/{port.network.prefixlen}")
            have = [str(a) for a in live.ipv4]
            if have != [str(want)]:
                out.append(f"{port.interface} has {', '.join(have) or 'no IPv4 address'}, "
                           f"wants {want}")
        if live.mtu != inv.fabric.mtu:
            out.append(f"{port.interface} has MTU {live.mtu}, wants {inv.fabric.mtu}")
    return out


def plan_node(inv: InventoryModel, node: str, st: NodeState) -> NodePlan:
    interfaces = netplan.interfaces(inv, node)
    refusals: list[str] = []
    if not st.privileged:
        said = f": `sudo -n true` says {st.sudo_error!r}" if st.sudo_error else ""
        refusals.append(f"writing {netplan.PATH} needs root or passwordless sudo on {node}"
                        f"{said}; fix: {FIX_PRIVILEGE}")
    elif st.unreadable:
        refusals.append(f"cannot read the current {netplan.PATH} even through sudo")
    if st.netplan is None:
        refusals.append("netplan is not installed (DGX OS ships it as /usr/sbin/netplan)")
    mgmt = set(st.management())
    for name in interfaces:
        if name in mgmt:
            refusals.append(f"{name} carries the SSH session or the default route (the "
                            "management interface): refusing to write it; check the "
                            "inventory's rails/links")
    if topology.of(inv).bootstrap_interface(node) in interfaces and topology.of(inv).point_to_point:
        refusals.append("the bootstrap interface is one of the fabric ports")
    live = _live(inv, node, st, refusals)
    return NodePlan(node, netplan.render(inv, node), st, interfaces, live, refusals)
