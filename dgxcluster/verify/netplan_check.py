"""`netplan`: does what the fabric has now survive a reboot? Compares each fabric interface's
live addresses and MTU with what the node's netplan files (`/etc/netplan/*.yaml`, merged as
netplan merges them) will set at boot. An address added with `ip addr add` or an MTU set
with `ip link set` works until the next reboot: WARN, with `dgxcluster fabric apply` as the
fix. Pure: the node's facts and its ports in.
"""

from __future__ import annotations

from dgxcluster.core.netplan import DEFAULT_MTU, PATH
from dgxcluster.facts.netplan import IfaceConf
from dgxcluster.inventory import topology
from dgxcluster.inventory.schema import InventoryModel, NodeSpec
from dgxcluster.verify.gather import NodeFacts
from dgxcluster.verify.results import CheckResult, Checks

CHECK = "netplan"
FIX = f"dgxcluster fabric apply (writes {PATH} from the inventory and applies it)"


def _drift(name: str, conf: IfaceConf | None, live_addrs: list[str], live_mtu: int | None,
           addressed: bool = True) -> list[str]:
    if conf is None:
        return [f"{name} is in no netplan file: its addresses and MTU are lost at reboot"]
    out = []
    planned = {str(a) for a in conf.addresses}
    for a in live_addrs if addressed else []:
        if a not in planned:
            out.append(f"{a} on {name} is not in netplan ({', '.join(conf.files)}): set by hand?")
    for a in sorted(planned - set(live_addrs)):
        out.append(f"netplan gives {name} {a}, which it does not have now (netplan apply not run?)")
    want = conf.mtu if conf.mtu is not None else DEFAULT_MTU
    if live_mtu is not None and live_mtu != want:
        said = f"mtu {conf.mtu}" if conf.mtu is not None else f"no mtu ({DEFAULT_MTU} at boot)"
        out.append(f"{name} has MTU {live_mtu} now but netplan says {said}: set by hand?")
    return out


def netplan_check(inv: InventoryModel, spec: NodeSpec, facts: NodeFacts) -> list[CheckResult]:
    c = Checks(spec.name)
    plan = facts.netplan.value
    if plan is None:
        c.warn(CHECK, f"could not read /etc/netplan: {facts.netplan.error}",
               "check the node's netplan files by hand")
        return c.results
    if plan.unreadable:
        c.warn(CHECK, f"cannot read {', '.join(plan.unreadable)} (netplan files are root's, "
               "mode 0600): what survives a reboot was not compared",
               "run verify-ib as root or give the user passwordless sudo for cat")
        return c.results
    ifaces = facts.ifaces.value or {}
    drift = list(plan.errors)
    checked = []
    for port in topology.of(inv).ports(spec.name):
        live = ifaces.get(port.interface)
        if live is None:
            continue  # `interfaces` says it is missing
        drift += _drift(port.interface, plan.ethernets.get(port.interface),
                        [str(a) for a in live.ipv4], live.mtu, port.address is not None)
        checked.append(port.interface)
    if drift:
        c.warn(CHECK, "the live fabric differs from what survives a reboot: " + "; ".join(drift),
               FIX)
    elif checked:
        c.ok(CHECK, f"{', '.join(checked)} as netplan sets them "
             f"({', '.join(sorted({f for i in checked for f in plan.ethernets[i].files}))})")
    return c.results
