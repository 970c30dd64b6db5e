"""Per-node checks of the fabric: RDMA devices and ports, twins, net devices, addresses,
MTU, link speed, GPU, jumbo pings and the OOM guard. Pure: facts in, `CheckResult`s out.

A node's fabric is its own ports (`inventory.topology`): its rails on a direct/switch
fabric (`nodes[].rails`, else `fabric.rails`), the ends of its cables on a ring or mesh.
"""

from __future__ import annotations

from dgxcluster.inventory import topology
from dgxcluster.inventory.schema import InventoryModel, NodeSpec
from dgxcluster.inventory.topology import Port
from dgxcluster.verify.gather import NodeFacts
from dgxcluster.verify.rdma import RdmaDev, by_port, cabled_ports, rdma_view
from dgxcluster.verify.results import CheckResult, Checks, Level, worst

FIX_NO_RDMA = (
    "install and load the ConnectX-7 stack (DGX OS ships mlx5_core, ib_uverbs, rdma-core, "
    "ibverbs-utils) and check `lspci | grep -i mellanox`; on the emulated testbed give the node "
    "simulated hardware: scripts/testbed simhw NODE healthy"
)
NETPLAN = "/etc/netplan/40-cx7.yaml"


def rails_key(inv: InventoryModel, spec: NodeSpec) -> str:
    """Where the inventory names this node's fabric interfaces (for messages and fixes)."""
    if topology.of(inv).point_to_point:
        return "fabric.links"
    return f"nodes[{inv.names.index(spec.name)}].rails" if spec.rails is not None \
        else "fabric.rails"


def node_checks(inv: InventoryModel, spec: NodeSpec, facts: NodeFacts) -> list[CheckResult]:
    c = Checks(spec.name)
    devs = rdma_view(facts)
    ports = topology.of(inv).ports(spec.name)
    where = rails_key(inv, spec)
    _rdma_devices(c, facts, devs)
    _rdma_ports(c, ports, where, devs)
    _twins(c, ports, where, devs)
    _interfaces(c, ports, where, facts)
    _addresses(c, inv, spec, ports, facts)
    _mtu(c, inv, ports, facts, devs)
    _speed(c, inv, facts)
    _gpu(c, facts)
    _pings(c, inv, facts)
    _oom_guard(c, facts)
    return c.results


FIX_OOM = ("install one: `sudo apt install earlyoom && sudo systemctl enable --now earlyoom` "
           "(or `sudo systemctl enable --now systemd-oomd`)")


def _oom_guard(c: Checks, facts: NodeFacts) -> None:
    """CPU and GPU share the memory: without a guard an over-asking process freezes the node."""
    f = facts.oom_guards
    if f.value is None:
        c.warn("oom-guard", f"could not tell whether an OOM guard runs: {f.error}", FIX_OOM)
    elif not f.value:
        c.warn("oom-guard", "no OOM guard (earlyoom, systemd-oomd, nohang) is active: a process "
               "that over-asks the memory CPU and GPU share freezes the node instead of being "
               "killed", FIX_OOM)
    else:
        c.ok("oom-guard", ", ".join(f"{g.name} ({'systemd unit active' if g.how == 'active' else 'running'})"
                                    for g in f.value))


def no_rdma_reason(facts: NodeFacts) -> str | None:
    """Why this node has no RDMA device at all, or None if it has some (or it is unclear)."""
    di = facts.devinfo
    if di.value is not None and not di.value.devices:
        return f"no RDMA devices: ibv_devinfo says {di.value.message!r}"
    if di.missing and facts.sysfs_read and not facts.sysfs_ports and not (facts.links.value or []):
        return "no RDMA devices: ibv_devinfo is not installed and /sys/class/infiniband is empty"
    return None


def _rdma_devices(c: Checks, facts: NodeFacts, devs: dict[str, RdmaDev] | None) -> None:
    reason = no_rdma_reason(facts)
    if reason:
        c.fail("rdma-devices", reason, FIX_NO_RDMA)
        return
    if devs is None:
        c.fail("rdma-devices", facts.devinfo.error or "RDMA devices could not be read",
               "run `ibv_devinfo` on the node and look at its output")
        return
    listing = ", ".join(d.label() for d in devs.values())
    fws = sorted({d.fw for d in devs.values() if d.fw})
    fw = f"; firmware {', '.join(fws)}" if fws else ""
    if facts.devinfo.value is None:
        c.warn("rdma-devices", f"{len(devs)} device(s) from sysfs (ibv_devinfo: "
               f"{facts.devinfo.error or 'unavailable'}): {listing}",
               "install ibverbs-utils (apt install ibverbs-utils) for ibv_devinfo")
        return
    c.ok("rdma-devices", f"{len(devs)} device(s): {listing}{fw}")


def _rail_port(i: int, rail: Port, where: str, devs: dict[str, RdmaDev],
               problems: list[tuple[Level, str]], ok: list[str]) -> None:
    """One rail's RDMA port: exists, ACTIVE, Ethernet, and paired with the rail's interface."""
    if not rail.rdma_device:
        problems.append((Level.WARN, f"{where}[{i}] ({rail.interface}) names no rdma_device"))
        return
    d = devs.get(rail.rdma_device)
    if d is None:
        problems.append((Level.FAIL, f"{rail.rdma_device} does not exist "
                                     f"(devices: {', '.join(devs) or 'none'})"))
        return
    if not d.active:
        problems.append((Level.FAIL, f"{d.name} ({d.netdev or rail.interface}) is PORT_{d.state}"))
    elif d.link_layer and d.link_layer.lower() != "ethernet":
        problems.append((Level.WARN, f"{d.name} link_layer is {d.link_layer}, not Ethernet (RoCE)"))
    if d.netdev and d.netdev != rail.interface:
        problems.append((Level.FAIL, f"{d.name} is the RDMA side of {d.netdev}, but {where} "
                                     f"pairs it with {rail.interface}"))
    if d.active and not (d.netdev and d.netdev != rail.interface):
        ok.append(f"{d.name} ({d.netdev or '?'}) ACTIVE")


def _rdma_ports(c: Checks, ports: list[Port], where: str,
                devs: dict[str, RdmaDev] | None) -> None:
    if devs is None or not devs:
        c.fail("rdma-ports", "no RDMA devices (see rdma-devices)", FIX_NO_RDMA)
        return
    problems: list[tuple[Level, str]] = []
    ok: list[str] = []
    for i, rail in enumerate(ports):
        _rail_port(i, rail, where, devs, problems, ok)
    if not problems:
        c.ok("rdma-ports", ", ".join(ok))
        return
    level = worst(lv for lv, _ in problems)
    detail = "; ".join(t for _, t in problems)
    rail_ports = set()
    for rail in ports:
        dev = devs.get(rail.rdma_device or "")
        if dev is not None and dev.port:
            rail_ports.add(dev.port)
    other = [p for p in cabled_ports(devs) if p not in rail_ports]
    if other:
        twins = [d for d in by_port(devs)[other[0]] if d.active]
        names = ", ".join(f"{d.netdev or '?'}/{d.name}" for d in twins)
        fix = (f"the cable seems to be in {other[0]} ({names} active): move it to the port "
               f"{where} names, or set {where} to {names}")
    elif any("pairs it with" in t for _, t in problems):
        fix = f"correct {where}: pair each interface with its own RDMA device (see ibdev2netdev)"
    else:
        fix = ("check the QSFP cable and the peer node; `ibdev2netdev` must show each rail (Up) "
               "and `ibv_devinfo` PORT_ACTIVE")
    c.add("rdma-ports", level, detail, fix)


def _twins(c: Checks, ports: list[Port], where: str, devs: dict[str, RdmaDev] | None) -> None:
    """Every active twin of a port the node uses is one of its rails (a ring uses both ports:
    all four twins)."""
    if devs is None or not devs:
        c.fail("twins", "no RDMA devices (see rdma-devices)", FIX_NO_RDMA)
        return
    listed = {p.rdma_device for p in ports if p.rdma_device}
    groups = by_port(devs)
    if not any(d.port for d in devs.values()):
        c.warn("twins", "cannot group devices into ports (no net device names known)",
               "install ibdev2netdev (mlnx-tools) or check /sys/class/infiniband/*/device/net")
        return
    missing: list[str] = []
    seen: list[str] = []
    for port, ds in sorted(groups.items()):
        if not any(d.name in listed for d in ds):
            continue
        seen.append(f"{port}: " + ", ".join(f"{d.name} {d.state}" for d in ds))
        missing += [f"{d.name} ({d.netdev or '?'}, {port})" for d in ds
                    if d.active and d.name not in listed]
    listed_active = [d for d in devs.values() if d.name in listed and d.active]
    if missing:
        c.fail("twins", f"active twin(s) not in {where}: {', '.join(missing)}; NCCL would use "
               "only part of the port (about 12-13.5 GB/s instead of ~22)",
               f"add every twin of the cabled port to {where} (interface + rdma_device)")
    elif not seen:
        c.fail("twins", f"no port of {where}' RDMA devices found on this node",
               f"set {where} to the twins of the cabled port (see ibdev2netdev)")
    elif not listed_active:
        other = [p for p in cabled_ports(devs) if not any(d.name in listed for d in groups[p])]
        cable = (f"; the cable is in {other[0]} (" + ", ".join(
            f"{d.netdev or '?'}/{d.name}" for d in groups[other[0]] if d.active) + ")") if other else ""
        c.fail("twins", f"no twin of {where} is active (" + "; ".join(seen) + f"){cable}",
               f"move the cable to the port {where} names, or set {where} to the active "
               "twins" if other else "check the QSFP cable and the peer node")
    else:
        c.ok("twins", f"{where} covers every active twin (" + "; ".join(seen) + ")")


def _ifaces_or_fail(c: Checks, check: str, facts: NodeFacts) -> bool:
    if facts.ifaces.ok:
        return True
    c.fail(check, f"could not read interfaces: {facts.ifaces.error}",
           "check that iproute2 (`ip`) works on the node")
    return False


def _interfaces(c: Checks, ports: list[Port], where: str, facts: NodeFacts) -> None:
    if not _ifaces_or_fail(c, "interfaces", facts):
        return
    ifaces = facts.ifaces.value or {}
    bad, good = [], []
    for rail in ports:
        i = ifaces.get(rail.interface)
        if i is None:
            others = ", ".join(n for n in ifaces if n != "lo")
            bad.append(f"{rail.interface} does not exist (interfaces: {others})")
        elif not i.up:
            bad.append(f"{rail.interface} is {i.operstate}")
        else:
            good.append(f"{rail.interface} UP")
    if bad:
        c.fail("interfaces", "; ".join(bad),
               "bring the fabric interfaces up (`sudo ip link set IFACE up`; permanently in "
               f"{NETPLAN}: dgxcluster fabric apply), or correct {where}")
    else:
        c.ok("interfaces", ", ".join(good))


def _address_key(inv: InventoryModel, port: Port, r: int) -> str:
    if topology.of(inv).point_to_point:
        for i, link in enumerate(inv.fabric.links):
            for j, e in enumerate(link.ends):
                if e.node == port.node and e.interface == port.interface:
                    return f"fabric.links[{i}].ends[{j}].address"
    return "fabric_ip" if r == 0 else f"rail_ips[{r}]"


def _addresses(c: Checks, inv: InventoryModel, spec: NodeSpec, ports: list[Port],
               facts: NodeFacts) -> None:
    if not _ifaces_or_fail(c, "addresses", facts):
        return
    ifaces = facts.ifaces.value or {}
    bad, good = [], []
    for r, rail in enumerate(ports):
        want = rail.address
        if want is None:
            continue  # the inventory gives this rail no address (no rail_ips)
        what = _address_key(inv, rail, r)
        i = ifaces.get(rail.interface)
        if i is not None and i.has(want):
            good.append(f"{rail.interface} has {want}")
            continue
        elsewhere = next((n for n, x in ifaces.items() if x.has(want)), None)
        have = ", ".join(str(a) for a in i.ipv4) if i and i.ipv4 else "no IPv4 address"
        if i is not None and i.problems:
            have += "; and " + "; ".join(i.problems) + " (a parse problem: report the line)"
        text = f"{what} {want} is not on {rail.interface} ({rail.interface} has {have})"
        if elsewhere:
            text += f"; {want} is on {elsewhere}"
        bad.append(text)
    if bad:
        keys = ("fabric.links" if topology.of(inv).point_to_point
                else f"nodes[{spec.name}].fabric_ip/rail_ips")
        c.fail("addresses", "; ".join(bad),
               f"address the interfaces as the inventory says (dgxcluster fabric apply writes "
               f"{NETPLAN} and applies it), or set {keys} to the addresses they carry")
    else:
        c.ok("addresses", ", ".join(good))


def _mtu(c: Checks, inv: InventoryModel, ports: list[Port], facts: NodeFacts,
         devs: dict[str, RdmaDev] | None) -> None:
    if not _ifaces_or_fail(c, "mtu", facts):
        return
    ifaces = facts.ifaces.value or {}
    want = inv.fabric.mtu
    bad, good, warn = [], [], []
    for rail in ports:
        i = ifaces.get(rail.interface)
        if i is None:
            bad.append(f"{rail.interface} missing")
        elif i.mtu is None or i.mtu < want:
            bad.append(f"{rail.interface} mtu {i.mtu}, expected at least {want}")
        else:
            good.append(f"{rail.interface} mtu {i.mtu}" + (f" (>= {want})" if i.mtu > want else ""))
        d = (devs or {}).get(rail.rdma_device or "")
        if d and d.active and d.active_mtu and want >= 4200 and d.active_mtu < 4096:
            warn.append(f"{d.name} RoCE active_mtu {d.active_mtu} (interface MTU below 4200 "
                        "when the port came up?)")
    fix = (f"set MTU {want} on the fabric interfaces (`sudo ip link set IFACE mtu {want}`; "
           f"permanently `mtu: {want}` in {NETPLAN}) on every node, or set fabric.mtu")
    if bad:
        c.fail("mtu", "; ".join(bad + warn), fix)
    elif warn:
        c.warn("mtu", "; ".join(good + warn), "bounce the port after setting the MTU "
               "(`sudo ip link set IFACE down && sudo ip link set IFACE up`)")
    else:
        c.ok("mtu", ", ".join(good))


def _speed(c: Checks, inv: InventoryModel, facts: NodeFacts) -> None:
    want = inv.fabric.link_speed_mbps
    if not facts.speeds:
        c.fail("link-speed", "no fabric interface to read (see interfaces)",
               "fix the interfaces first")
        return
    if all(f.missing for f in facts.speeds.values()):
        c.warn("link-speed", "ethtool is not installed: link speed not checked",
               "install ethtool (apt install ethtool)")
        return
    bad, good = [], []
    for iface, f in facts.speeds.items():
        s = f.value
        if s is None:
            bad.append(f"{iface}: {f.error}")
        elif s.speed_mbps is None:
            bad.append(f"{iface}: speed {s.speed_text} (no link)")
        elif s.speed_mbps < want:
            bad.append(f"{iface}: {s.speed_mbps}Mb/s, expected {want}Mb/s")
        else:
            good.append(f"{iface} {s.speed_mbps}Mb/s")
    if bad:
        fell_back = any("expected" in b for b in bad)
        c.fail("link-speed", "; ".join(bad + good),
               "the link fell back: reseat or replace the QSFP cable (200G-rated), and set a switch "
               "port to 200G; then check `ethtool IFACE | grep Speed`" if fell_back else
               "check the QSFP cable and the peer node")
    else:
        c.ok("link-speed", ", ".join(good))


def _gpu(c: Checks, facts: NodeFacts) -> None:
    f = facts.smi
    if f.missing:
        c.warn("gpu", "nvidia-smi not found: no NVIDIA driver on this node",
               "install the NVIDIA driver (DGX OS ships it)")
    elif f.value is None:
        c.warn("gpu", f.error or "nvidia-smi gave nothing", "run nvidia-smi on the node")
    elif f.value.error:
        c.fail("gpu", f"nvidia-smi: {f.value.error}", "reload the NVIDIA driver or reboot the node")
    elif not f.value.gpus:
        c.fail("gpu", "nvidia-smi lists no GPU", "check the NVIDIA driver (nvidia-smi)")
    else:
        names = ", ".join(g.name for g in f.value.gpus)
        c.ok("gpu", f"{names}; driver {f.value.driver}, CUDA {f.value.cuda}")


def _pings(c: Checks, inv: InventoryModel, facts: NodeFacts) -> None:
    """This node's pings over each of its links (the per-link table has both directions)."""
    if not facts.pings:
        if len(inv.nodes) > 1:
            c.warn("ping", "no peer was pinged", "check the inventory's nodes")
        return
    size = inv.fabric.mtu - 28
    segments = topology.of(inv).segments
    bad, good, too_big = [], [], False
    for (peer, r), f in facts.pings.items():
        if r >= len(segments):
            continue
        seg = segments[r]
        mine = next((p for p in seg.ports if p.node == facts.node), None)
        theirs = next((p for p in seg.ports if p.node == peer), None)
        if mine is None or theirs is None:
            continue
        rail, ip = mine.interface, theirs.address
        if f.missing:
            c.warn("ping", "ping is not installed", "install iputils-ping")
            return
        p = f.value
        if p is None:
            bad.append(f"{peer} {ip} via {rail}: {f.error}")
        elif p.too_big_mtu is not None:
            too_big = True
            mtu = f" (mtu {p.too_big_mtu})" if p.too_big_mtu else ""
            bad.append(f"{peer} {ip} via {rail}: {size}-byte packet too big{mtu}")
        elif not p.ok:
            why = f": {p.error}" if p.error else ""
            bad.append(f"{peer} {ip} via {rail}: {p.received}/{p.transmitted} replies{why}")
        else:
            rtt = f" {p.rtt_avg_ms:.2f} ms" if p.rtt_avg_ms is not None else ""
            good.append(f"{peer} {ip} via {rail}{rtt}")
    if bad:
        fix = (f"make the MTU {inv.fabric.mtu} on every fabric interface, on both ends"
               if too_big else
               "check the cable, the peer's addresses and that both ends of each link share a "
               "subnet (see the link rows)")
        c.fail("ping", f"{size}-byte don't-fragment pings failed: " + "; ".join(bad), fix)
    else:
        c.ok("ping", f"{size}-byte don't-fragment pings answered: " + ", ".join(good))
