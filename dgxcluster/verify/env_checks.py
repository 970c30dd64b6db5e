"""Checks of what the containers will get: the environment from `containerenv.container_env`
(the same function `start` uses) against each node's interfaces and RDMA devices, and the
`docker run` options from the inventory. Pure.
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network

from dgxcluster.core.containerenv import IFNAME_VARS
from dgxcluster.facts.ipaddr import Interface
from dgxcluster.inventory import topology
from dgxcluster.inventory.schema import InventoryModel, NodeSpec
from dgxcluster.verify.gather import NodeFacts
from dgxcluster.verify.node_checks import FIX_NO_RDMA
from dgxcluster.verify.rdma import RdmaDev, rdma_view
from dgxcluster.verify.results import CLUSTER, CheckResult, Checks

ENV_FIX = ("correct the node's rails or links (nodes[].rails, fabric.rails, fabric.links: "
           "dgxcluster derives these variables from them), or the override in fabric.nccl_env / "
           "container.env")


def nccl_list(value: str) -> tuple[str, list[tuple[str, int | None]]]:
    """NCCL_IB_HCA / NCCL_SOCKET_IFNAME syntax: optional `^` (exclude) or `=` (exact), then
    comma-separated names (prefixes unless exact), each with an optional `:port`."""
    mode = ""
    v = value.strip()
    if v[:1] in ("^", "="):
        mode, v = v[0], v[1:]
        if v[:1] == "=" and mode == "^":
            mode, v = "^=", v[1:]
    items: list[tuple[str, int | None]] = []
    for part in v.split(","):
        part = part.strip()
        if not part:
            continue
        name, _, port = part.partition(":")
        items.append((name, int(port) if port.isdigit() else None))
    return mode, items


def nccl_matches(value: str, names: list[str]) -> list[str]:
    """Which of `names` NCCL would select for such a list (prefix match unless `=`)."""
    mode, items = nccl_list(value)
    exact = "=" in mode

    def hit(n: str) -> bool:
        return any((n == p) if exact else n.startswith(p) for p, _ in items)

    return [n for n in names if (not hit(n)) == mode.startswith("^")]


def env_checks(inv: InventoryModel, spec: NodeSpec, facts: NodeFacts,
               env: dict[str, str]) -> list[CheckResult]:
    c = Checks(spec.name)
    _ifnames(c, inv, facts, env)
    _ib_hca(c, facts, env)
    _gid(c, facts, env)
    _host_ip(c, inv, spec, facts, env)
    return c.results


def _ifnames(c: Checks, inv: InventoryModel, facts: NodeFacts, env: dict[str, str]) -> None:
    """Every variable `container_env` derives from the fabric interface (`IFNAME_VARS`)."""
    if not facts.ifaces.ok:
        c.fail("nccl-ifname", f"could not read interfaces: {facts.ifaces.error}",
               "check that `ip` works on the node")
        return
    ifaces = facts.ifaces.value or {}
    devs = rdma_view(facts) or {}
    topo = topology.of(inv)
    fabric = {p.interface for p in topo.ports(facts.node)} | {topo.bootstrap_interface(facts.node)}
    bad: list[str] = []
    warn: list[str] = []
    good: list[str] = []
    for var in IFNAME_VARS:
        val = env.get(var)
        if val is None:
            continue
        chosen = _chosen(var, val, ifaces, devs, fabric, bad)
        if chosen is None:
            continue
        if not chosen:
            bad.append(f"{var}={val} names no interface of this node")
            continue
        down = [n for n in chosen if not ifaces[n].up]
        if down:
            bad.append(f"{var}={val}: {', '.join(down)} is down")
        elif not set(chosen) & fabric:
            warn.append(f"{var}={val} selects {', '.join(chosen)}, not a fabric interface")
        else:
            good.append(f"{var}={val}")
    _report_ifnames(c, bad, warn, good, topo.bootstrap_interface(facts.node))


def _report_ifnames(c: Checks, bad: list[str], warn: list[str], good: list[str],
                    want: str) -> None:
    if bad:
        c.fail("nccl-ifname", "; ".join(bad + warn), ENV_FIX)
    elif warn:
        c.warn("nccl-ifname", "; ".join(warn + good), f"point it at {want}")
    elif good:
        c.ok("nccl-ifname", ", ".join(good) + " (existing, UP)")
    else:
        c.warn("nccl-ifname", "no *_SOCKET_IFNAME is set", ENV_FIX)


def _chosen(var: str, val: str, ifaces: dict[str, Interface], devs: dict[str, RdmaDev],
            fabric: set[str], bad: list[str]) -> list[str] | None:
    """The interfaces `var=val` selects on this node (None: nothing to judge)."""
    items = [x.strip() for x in val.split(",") if x.strip()]
    if var == "NCCL_SOCKET_IFNAME":
        chosen = [n for n in nccl_matches(val, sorted(ifaces)) if n != "lo"]
        if nccl_list(val)[0].startswith("^"):
            chosen = [n for n in chosen if not n.startswith(("docker", "veth"))]
        return chosen
    if var == "UCX_NET_DEVICES":
        return _ucx_devices(val, items, ifaces, devs, fabric, bad) or None
    if var == "OMPI_MCA_btl_tcp_if_include":  # interface names and/or CIDR networks
        return [n for n, i in ifaces.items() if n in items or any(
            _in_network(a.ip, x) for x in items if "/" in x for a in i.ipv4)]
    return [n for n in items if n in ifaces]


def _ucx_devices(val: str, items: list[str], ifaces: dict[str, Interface],
                 devs: dict[str, RdmaDev], fabric: set[str], bad: list[str]) -> list[str]:
    chosen: list[str] = []
    for item in items:
        if item == "all":
            chosen += sorted(fabric & set(ifaces))
        elif ":" in item:
            d = devs.get(item.split(":")[0])
            if d is None or not d.active:
                bad.append(f"UCX_NET_DEVICES={val}: {item} is not an active RDMA device")
        elif item in ifaces:
            chosen.append(item)
        else:
            bad.append(f"UCX_NET_DEVICES={val}: no interface {item}")
    return chosen


def _in_network(ip: IPv4Address, cidr: str) -> bool:
    try:
        return ip in IPv4Network(cidr, strict=False)
    except ValueError:
        return False


def _ib_hca(c: Checks, facts: NodeFacts, env: dict[str, str]) -> None:
    if env.get("NCCL_IB_DISABLE", "0").strip() not in ("", "0"):
        c.fail("nccl-ib-hca", f"NCCL_IB_DISABLE={env['NCCL_IB_DISABLE']}: NCCL will use TCP sockets "
               "(about 16 Gb/s instead of ~190)", "remove NCCL_IB_DISABLE from fabric.nccl_env / "
               "container.env")
        return
    devs = rdma_view(facts)
    if not devs:
        c.fail("nccl-ib-hca", "no RDMA devices: NCCL would fall back to TCP sockets", FIX_NO_RDMA)
        return
    active = [d for d in devs.values() if d.active]
    gid = env.get("NCCL_IB_GID_INDEX")
    gid_text = f", NCCL_IB_GID_INDEX={gid}" if gid else ""
    hca = env.get("NCCL_IB_HCA")
    if hca is None:
        c.warn("nccl-ib-hca", "NCCL_IB_HCA is not set: NCCL picks any active device "
               f"({', '.join(d.name for d in active) or 'none'})",
               "list the twins in fabric.rails[].rdma_device")
        return
    chosen = nccl_matches(hca, [d.name for d in active])
    named = nccl_matches(hca, list(devs))
    if not chosen and named:
        c.fail("nccl-ib-hca", f"NCCL_IB_HCA={hca} names {', '.join(named)}, none of them ACTIVE: "
               "NCCL falls back to TCP sockets", "bring the rails' ports up (see rdma-ports)")
        return
    if not chosen:
        c.fail("nccl-ib-hca", f"NCCL_IB_HCA={hca} matches no active RDMA device (active: "
               f"{', '.join(d.name for d in active) or 'none'}): NCCL falls back to TCP sockets",
               ENV_FIX)
        return
    missed = _missed_twins(chosen, active)
    if missed:
        c.fail("nccl-ib-hca", f"NCCL_IB_HCA={hca} leaves out active twin(s) "
               f"{', '.join(missed)} of the same port: bandwidth caps near 12-13.5 GB/s",
               f"include both twins, e.g. NCCL_IB_HCA={','.join(chosen + missed)}"
               f" ({ENV_FIX})")
        return
    c.ok("nccl-ib-hca", f"NCCL_IB_HCA={hca} selects {', '.join(chosen)} (ACTIVE){gid_text}")


#: GID index 3 is, on mlx5 RoCE ports, the RoCE v2 GID made from the net device's IPv4
#: address (0/1: RoCE v1/v2 link-local, 2/3: RoCE v1/v2 IPv4-mapped); it exists only while
#: that interface holds an IPv4 address.
ROCE_V2_IPV4_GID = "3"


def _gid(c: Checks, facts: NodeFacts, env: dict[str, str]) -> None:
    """NCCL_IB_GID_INDEX=3 on a twin without an IPv4 address names a GID that does not exist."""
    gid = env.get("NCCL_IB_GID_INDEX", "").strip()
    devs = rdma_view(facts)
    if gid != ROCE_V2_IPV4_GID or not devs or not facts.ifaces.ok:
        return
    ifaces = facts.ifaces.value or {}
    active = [d.name for d in devs.values() if d.active]
    hca = env.get("NCCL_IB_HCA")
    chosen = nccl_matches(hca, active) if hca is not None else active
    bare, good = [], []
    for name in chosen:
        d = devs[name]
        i = ifaces.get(d.netdev or "")
        if i is None:
            continue
        if i.ipv4:
            good.append(f"{d.name} ({i.name} {i.ipv4[0].ip})")
        else:
            why = f"; {'; '.join(i.problems)}" if i.problems else ""
            bare.append(f"{d.name} ({i.name} has no IPv4 address{why})")
    if bare:
        c.fail("nccl-gid", f"NCCL_IB_GID_INDEX={gid} is the RoCE v2 IPv4 GID, which a twin without "
               f"an IPv4 address does not have: {', '.join(bare)}; NCCL cannot use it",
               "give every twin an address on its own subnet (fabric.rails' interfaces; "
               "permanently in /etc/netplan/40-cx7.yaml) and list it in nodes[].rail_ips")
    elif good:
        c.ok("nccl-gid", f"NCCL_IB_GID_INDEX={gid} (RoCE v2, IPv4): {', '.join(good)}")


def _missed_twins(chosen: list[str], active: list[RdmaDev]) -> list[str]:
    ports = {d.port for d in active if d.name in chosen and d.port}
    return [d.name for d in active if d.port in ports and d.name not in chosen]


def _host_ip(c: Checks, inv: InventoryModel, spec: NodeSpec, facts: NodeFacts,
             env: dict[str, str]) -> None:
    val = env.get("VLLM_HOST_IP", "")
    try:
        ip = IPv4Address(val)
    except ValueError:
        c.fail("host-ip", f"VLLM_HOST_IP={val!r} is not an IPv4 address", ENV_FIX)
        return
    ifaces: dict[str, Interface] = facts.ifaces.value or {}
    where = next((n for n, i in ifaces.items() if i.has(ip)), None)
    topo = topology.of(inv)
    carrier = topo.bootstrap_interface(spec.name)
    allowed = {carrier} | ({p.interface for p in topo.ports(spec.name)}
                           if not topo.point_to_point else set())
    text = f"VLLM_HOST_IP and Ray --node-ip-address {ip}"
    if ip != spec.fabric_ip:
        c.fail("host-ip", f"{text} differ from the node's fabric_ip {spec.fabric_ip}", ENV_FIX)
    elif not facts.ifaces.ok:
        c.fail("host-ip", f"{text}: interfaces unreadable ({facts.ifaces.error})",
               "check that `ip` works on the node")
    elif where is None:
        c.fail("host-ip", f"{text} is not configured on {spec.name}: Ray/vLLM would fail "
               "('Tensor parallel size exceeds available GPUs')",
               f"set nodes[{spec.name}].fabric_ip to the address on {carrier}")
    elif where not in allowed:
        what = ("the interface every node reaches it on (fabric.bootstrap_interface)"
                if topo.point_to_point else "a fabric interface")
        c.fail("host-ip", f"{text} is on {where}, not {what}: NCCL/Ray traffic "
               "would take that path", f"use the address of {carrier}")
    elif ip.is_link_local:
        c.warn("host-ip", f"{text} is link-local (on {where}); Ray and vLLM may pick another IP",
               f"give {where} a static address (NVIDIA's playbook: 192.168.100.x/24)")
    else:
        c.ok("host-ip", f"{text} is on {where}")


def container_checks(inv: InventoryModel) -> list[CheckResult]:
    """`docker run` options that RDMA inside the container needs (inventory only)."""
    c = Checks(CLUSTER)
    ct = inv.container
    extra = " ".join(ct.extra_args)
    privileged = "--privileged" in ct.extra_args
    has_dev = privileged or any(d.split(":")[0].startswith("/dev/infiniband") for d in ct.devices) \
        or "/dev/infiniband" in extra
    memlock = ct.ulimits.get("memlock", "")
    unlimited = memlock.replace("unlimited", "-1") in ("-1", "-1:-1") or "memlock=-1" in extra \
        or "memlock=unlimited" in extra
    problems, warns = [], []
    if not has_dev:
        problems.append("container.devices lacks /dev/infiniband: NCCL inside falls back to TCP "
                        "sockets (~16 Gb/s)")
    if not unlimited:
        problems.append(f"memlock ulimit is {memlock or 'unset'}, not unlimited (-1): RDMA cannot "
                        "pin memory")
    if ct.network != "host":
        problems.append(f"container.network is {ct.network}: the fabric interfaces are only "
                        "visible with host networking")
    if "IPC_LOCK" not in [x.upper() for x in ct.cap_add] and not privileged:
        warns.append("cap_add lacks IPC_LOCK")
    fix = ("set container.devices: [/dev/infiniband], container.ulimits: {memlock: \"-1\"}, "
           "container.cap_add: [IPC_LOCK], container.network: host")
    if problems:
        c.fail("container-rdma", "; ".join(problems + warns), fix)
    elif warns:
        c.warn("container-rdma", "; ".join(warns), fix)
    else:
        c.ok("container-rdma", f"devices {', '.join(ct.devices) or '(privileged)'}, memlock "
             f"{memlock or 'unlimited'}, cap_add {', '.join(ct.cap_add) or '-'}, network {ct.network}")
    return c.results
