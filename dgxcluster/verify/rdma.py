"""One view of a node's RDMA devices, whichever tools it had (ibv_devinfo, ibdev2netdev,
sysfs), and the twin/port grouping a DGX Spark needs.

A CX-7 QSFP port shows up as two "twins" (e.g. enp1s0f1np1/rocep1s0f1 and
enP2p1s0f1np1/roceP2p1s0f1), each a ~100 Gb/s PCIe x4 link: both are needed for 200 Gb/s.
Twins share the net device suffix `np<N>` (the physical port); the RDMA name's `f<N>` is the
fallback when no net device is known.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from dgxcluster.facts.ibdev2netdev import netdev_of
from dgxcluster.verify.gather import NodeFacts


@dataclass(frozen=True)
class RdmaDev:
    name: str
    state: str  # ACTIVE, DOWN, INIT, ... (without the PORT_ prefix)
    active_mtu: int | None = None
    link_layer: str | None = None
    netdev: str | None = None
    fw: str | None = None

    @property
    def active(self) -> bool:
        return self.state == "ACTIVE"

    @property
    def port(self) -> str | None:
        return port_key(self.name, self.netdev)

    def label(self) -> str:
        net = f" ({self.netdev})" if self.netdev else ""
        mtu = f" mtu {self.active_mtu}" if self.active and self.active_mtu else ""
        return f"{self.name}{net} {self.state}{mtu}"


def port_key(device: str, netdev: str | None) -> str | None:
    """'port 1' for enp1s0f1np1 / rocep1s0f1; None if the names say nothing."""
    if netdev and (m := re.search(r"np(\d+)$", netdev)):
        return f"port {m.group(1)}"
    if m := re.search(r"f(\d+)$", device):
        return f"port {m.group(1)}"
    return None


def rdma_view(facts: NodeFacts) -> dict[str, RdmaDev] | None:
    """Devices by name, or None when nothing could be read at all."""
    links = facts.links.value or []
    out: dict[str, RdmaDev] = {}
    if facts.devinfo.value is not None:
        for d in facts.devinfo.value.devices:
            p = d.port(1) or d.ports[0]
            out[d.name] = RdmaDev(d.name, p.short_state, p.active_mtu, p.link_layer,
                                  netdev_of(links, d.name), d.fw_ver)
        return out
    if facts.sysfs_read:
        for sp in facts.sysfs_ports:
            if sp.device not in out:
                out[sp.device] = RdmaDev(sp.device, sp.state.removeprefix("PORT_"), None,
                                         sp.link_layer, netdev_of(links, sp.device))
        return out
    return None


def by_port(devs: dict[str, RdmaDev]) -> dict[str, list[RdmaDev]]:
    groups: dict[str, list[RdmaDev]] = {}
    for d in devs.values():
        if d.port:
            groups.setdefault(d.port, []).append(d)
    return groups


def cabled_ports(devs: dict[str, RdmaDev]) -> list[str]:
    """Ports with at least one ACTIVE twin, sorted."""
    return sorted(k for k, ds in by_port(devs).items() if any(d.active for d in ds))
