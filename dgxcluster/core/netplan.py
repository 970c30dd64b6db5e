"""The CX-7 netplan file each node should have, rendered from the inventory. Pure.

One file per node, `/etc/netplan/40-cx7.yaml` (the name NVIDIA's playbooks use), mode 0600
(netplan warns about wider permissions), holding only the node's fabric interfaces: a
static address per rail or cable, the fabric MTU, no DHCP (netplan.readthedocs.io "YAML
configuration": `network.version: 2`, `ethernets.<name>.dhcp4`, `dhcp6`, `mtu`,
`addresses`). The management interface is never written: on a ring or mesh it carries
fabric_ip, and it is never one of the node's fabric ports. `fabric plan | apply` write it;
`verify-ib` compares the live state with what the node's netplan files say.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dgxcluster.inventory import topology

if TYPE_CHECKING:
    from dgxcluster.inventory.schema import InventoryModel

PATH = "/etc/netplan/40-cx7.yaml"
MODE = 0o600
#: netplan's MTU when an interface's entry sets none (the kernel's Ethernet default).
DEFAULT_MTU = 1500


def interfaces(inv: InventoryModel, node: str) -> list[str]:
    """The interfaces the file manages on `node`: its fabric ports, nothing else."""
    return [p.interface for p in topology.of(inv).ports(node)]


def render(inv: InventoryModel, node: str) -> str:
    """The file's text for `node`: stable, so a second `fabric apply` finds it unchanged."""
    topo = topology.of(inv)
    lines = [f"# {PATH} for {node}: the CX-7 fabric ({topology.describe(topo)}).",
             "# Written by `dgxcluster fabric apply` from the inventory; edit the inventory "
             "instead.",
             "network:", "  version: 2", "  ethernets:"]
    for p in topo.ports(node):
        lines += [f"    {p.interface}:",
                  "      dhcp4: false",
                  "      dhcp6: false",
                  f"      mtu: {inv.fabric.mtu}"]
        if p.address is not None and p.network is not None:
            lines.append(f"      addresses: [{p.address}/{p.network.prefixlen}]")
    return "\n".join(lines) + "\n"
