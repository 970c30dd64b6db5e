"""Host-side plumbing: bridges, veths, namespaces, firewall rules. Every step is idempotent."""

from __future__ import annotations

import os
from pathlib import Path

from testbed_lib.layout import MGMT_IF, NSDIR, Instance, Node, Wire, mgmt_gateway, mgmt_gateway6
from testbed_lib.sh import ok, run

#: IPv6 addresses skip duplicate address detection: usable at once, not "tentative" for ~1 s.
_NODAD = {True: ["nodad"], False: []}


def is_mountpoint(path: Path) -> bool:
    target = str(path)
    with open("/proc/self/mountinfo", encoding="utf-8") as fh:
        return any(line.split()[4] == target for line in fh)


def ensure_nsdir() -> None:
    """A private bind mount to hold persistent namespace files."""
    NSDIR.mkdir(parents=True, exist_ok=True)
    if not is_mountpoint(NSDIR):
        run(["mount", "--bind", str(NSDIR), str(NSDIR)])
        run(["mount", "--make-private", str(NSDIR)])


def link_exists(name: str, netns: str | None = None) -> bool:
    cmd = ["ip"] + (["-n", netns] if netns else []) + ["link", "show", name]
    return ok(cmd)


def bridge_kinds(inst: Instance) -> list[str]:
    return ["m", *(w.key for w in inst.wiring())]


def ensure_bridges(inst: Instance) -> None:
    for kind in bridge_kinds(inst):
        br = inst.bridge(kind)
        if not link_exists(br):
            run(["ip", "link", "add", br, "type", "bridge"])
        if kind != "m":
            run(["ip", "link", "set", br, "mtu", str(inst.mtu)])
        run(["ip", "link", "set", br, "up"])
        if not ok(["iptables", "-C", "FORWARD", "-i", br, "-j", "ACCEPT"]):
            run(["iptables", "-I", "FORWARD", "-i", br, "-j", "ACCEPT"])
    addrs = run(["ip", "-o", "addr", "show", "dev", inst.bridge("m")]).stdout
    for gw in (f"{mgmt_gateway(inst)}/24", f"{mgmt_gateway6(inst)}/64"):
        if f" {gw} " not in addrs:
            run(["ip", "addr", "add", gw, "dev", inst.bridge("m"), *_NODAD[":" in gw]])


def remove_bridges(inst: Instance) -> None:
    for kind in dict.fromkeys([*bridge_kinds(inst), "r0", "r1"]):
        br = inst.bridge(kind)
        while ok(["iptables", "-C", "FORWARD", "-i", br, "-j", "ACCEPT"]):
            run(["iptables", "-D", "FORWARD", "-i", br, "-j", "ACCEPT"])
        if link_exists(br):
            run(["ip", "link", "del", br], check=False)


def ensure_netns(node: Node) -> None:
    if not Path(f"/run/netns/{node.netns}").exists():
        run(["ip", "netns", "add", node.netns])
    ns = node.netns
    run(["ip", "-n", ns, "link", "set", "lo", "up"])
    plan = [("m", MGMT_IF, f"{node.mgmt_ip}/24", node.inst.bridge("m"), 1500)]
    plan += [(m.kind, m.ifname, m.ip, node.inst.bridge(w.key), node.inst.mtu)
             for w, m in node.members()]
    for kind, ifname, cidr_ip, bridge, mtu in plan:
        hv = node.host_veth(kind)
        if not link_exists(hv):
            run(["ip", "link", "add", hv, "mtu", str(mtu), "type", "veth",
                 "peer", "name", ifname, "mtu", str(mtu), "netns", ns])
        run(["ip", "link", "set", hv, "master", bridge, "up"])
        addrs = run(["ip", "-n", ns, "-o", "addr", "show", "dev", ifname]).stdout
        # the management port is dual-stack (IPv6 for tests of IPv6 `host:` addresses)
        for cidr in [cidr_ip] + ([f"{node.mgmt_ip6}/64"] if kind == "m" else []):
            if f" {cidr} " not in addrs:
                run(["ip", "-n", ns, "addr", "add", cidr, "dev", ifname, *_NODAD[":" in cidr]])
        run(["ip", "-n", ns, "link", "set", ifname, "up"])


def ensure_private_ns(node: Node) -> None:
    """Mount + UTS namespace: the node's own /root, /tmp, /run, /usr/local/sbin and hostname."""
    d = node.dir
    for sub, mode in (("root", 0o700), ("root/.ssh", 0o700), ("tmp", 0o1777), ("run", 0o755),
                      ("sbin", 0o755), ("etc", 0o755)):
        (d / sub).mkdir(parents=True, exist_ok=True)
        os.chmod(d / sub, mode)
    if is_mountpoint(node.mnt_ns) and is_mountpoint(node.uts_ns):
        return
    for f in (node.mnt_ns, node.uts_ns):
        if is_mountpoint(f):
            run(["umount", str(f)], check=False)
        f.touch()
    script = (
        'set -e; mount --bind "$1/root" /root; mount --bind "$1/tmp" /tmp; '
        'mount --bind "$1/run" /run; mkdir -p /run/sshd; '
        'mount --bind "$1/sbin" /usr/local/sbin; hostname "$2"'
    )
    run(["unshare", f"--mount={node.mnt_ns}", f"--uts={node.uts_ns}", "--propagation", "private",
         "sh", "-c", script, "sh", str(d), node.name])


def fabric_kinds(node: Node) -> list[str]:
    return [m.kind for _, m in node.members()]


def set_links(node: Node, up: bool, fabric_only: bool = False) -> None:
    """The node's veths on this machine's side: down is a pulled cable (the node's own
    interfaces stay administratively up and lose carrier)."""
    for kind in ([] if fabric_only else ["m"]) + fabric_kinds(node):
        run(["ip", "link", "set", node.host_veth(kind), "up" if up else "down"])


def cable_wires(inst: Instance, a: Node, b: Node) -> list[Wire]:
    """The wires (both twins) of the cable joining nodes a and b: a ring's cable, or on a
    direct/switch fabric every rail (a switch port per node: both ends go dark only for a
    direct cable)."""
    return [w for w in inst.wiring()
            if {m.node for m in w.members} >= {a.i, b.i}
            and (w.cable is None or set(w.cable) == {a.i, b.i})]


def set_cable(inst: Instance, a: Node, b: Node, up: bool) -> list[str]:
    """Pull (or plug back) the cable between a and b: both ends' veths of its twins."""
    changed = []
    for w in cable_wires(inst, a, b):
        for m in w.members:
            if m.node in (a.i, b.i):
                veth = inst.node(m.node).host_veth(m.kind)
                run(["ip", "link", "set", veth, "up" if up else "down"])
                changed.append(f"{inst.node(m.node).name}:{m.ifname}")
    return changed


def links_up(node: Node) -> bool:
    out = run(["ip", "-o", "link", "show", node.host_veth("m")], check=False).stdout
    return "state DOWN" not in out and ",UP" in out


def netns_pids(node: Node) -> list[int]:
    out = run(["ip", "netns", "pids", node.netns], check=False).stdout
    return [int(p) for p in out.split()]


def remove_node_ns(node: Node) -> None:
    for f in (node.mnt_ns, node.uts_ns):
        if is_mountpoint(f):
            run(["umount", "-l", str(f)], check=False)
        if f.exists():
            f.unlink()
    if Path(f"/run/netns/{node.netns}").exists():
        run(["ip", "netns", "del", node.netns], check=False)


# -- a node this machine cannot reach: only through another node (a jump host) ---------------

ISOLATE_TAG = "dgxtb-isolate"


def isolate_rule(node: Node) -> list[str]:
    """Drop everything from this machine (the management bridge's address) at the node, as a
    firewalled management network would: the other nodes still reach it."""
    return ["INPUT", "-s", f"{mgmt_gateway(node.inst)}/32", "-m", "comment",
            "--comment", ISOLATE_TAG, "-j", "DROP"]


def _iptables(node: Node) -> list[str]:
    return ["nsenter", f"--net=/run/netns/{node.netns}", "iptables"]


def isolated(node: Node) -> bool:
    return ok([*_iptables(node), "-C", *isolate_rule(node)])


def set_isolated(node: Node, on: bool) -> None:
    if on and not isolated(node):
        run([*_iptables(node), "-I", *isolate_rule(node)])
    while not on and isolated(node):
        run([*_iptables(node), "-D", *isolate_rule(node)])
