"""`scripts/testbed`: bring an emulated cluster up or down, and inject faults into it."""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

from testbed_lib import baseimage, daemons, disks, hfcache, net, netplan, simhw, systemd, users
from testbed_lib.inventory import alias_inventory, ssh_config
from testbed_lib.inventory import paths as inventory_paths
from testbed_lib.inventory import write as write_inventory
from testbed_lib.layout import STATE, Instance, Node, allocate, instances, topology_problem
from testbed_lib.sh import TestbedError, ensure_tools, run

BASE_TOOLS = ["sshd", "ssh-keygen", "ip", "iptables", "nsenter"]
DOCKER_TOOLS = ["dockerd", "mmdebstrap"]


@contextmanager
def locked() -> Iterator[None]:
    STATE.mkdir(parents=True, exist_ok=True)
    with open(STATE / ".lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def parallel(fn: Callable[[Node], None], nodes: list[Node], workers: int = 8) -> None:
    errors: list[str] = []
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(nodes)))) as pool:
        for node, fut in [(n, pool.submit(fn, n)) for n in nodes]:
            try:
                fut.result()
            except Exception as exc:
                errors.append(f"{node.name}: {exc}")
    if errors:
        raise TestbedError("; ".join(errors))


def need(name: str) -> Instance:
    inst = Instance.load(name)
    if inst is None:
        raise TestbedError(f"no testbed named {name!r} (run: scripts/testbed up N --name {name})")
    return inst


def node_of(inst: Instance, name: str) -> Node:
    try:
        return inst.find(name)
    except KeyError:
        names = ", ".join(n.name for n in inst.all_nodes())
        raise TestbedError(f"no node {name!r} in testbed {inst.name!r} ({names})") from None


# -- commands --------------------------------------------------------------------------------

def _set_topology(inst: Instance, a: argparse.Namespace) -> None:
    """--topology/--ports for a new testbed; a running one keeps its cabling unless the same
    is asked (a different one needs `down` first: its bridges and veths differ)."""
    ports = [int(p) for p in a.ports.split(",")] if a.ports else []
    topology = a.topology or (inst.topology if inst.nodes else "switch")
    problem = topology_problem(topology, a.n, ports)
    if problem:
        raise TestbedError(problem)
    if len(ports) == 1:
        ports = ports * a.n
    rewire = topology in ("ring", "mesh") and inst.nodes not in (0, a.n)
    if inst.nodes and (topology != inst.topology or (a.ports and ports != inst.ports) or rewire):
        raise TestbedError(f"testbed {inst.name} is cabled as a {inst.topology}"
                           f"{' (ports ' + ','.join(map(str, inst.ports)) + ')' if inst.ports else ''}"
                           f": take it down first (scripts/testbed --name {inst.name} down)")
    inst.topology = topology
    inst.ports = ports or inst.ports
    inst.explicit = inst.explicit or a.topology is not None


def cmd_up(a: argparse.Namespace) -> int:
    t0 = time.monotonic()
    ensure_tools(BASE_TOOLS + (DOCKER_TOOLS if a.docker else []))
    with locked():
        inst = allocate(a.name)
        old = inst.nodes
        _set_topology(inst, a)
        inst.nodes = a.n
        inst.docker = inst.docker or a.docker
        inst.mtu = a.mtu
        inst.users = list(dict.fromkeys([*inst.users, *map(users.check_name, a.user or [])]))
        inst.save()
        for i in range(a.n + 1, old + 1):
            _remove_node(Node(inst, i))
        net.ensure_nsdir()
        if not inst.key.exists():
            run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"dgxtb-{inst.name}",
                 "-f", str(inst.key)])
        net.ensure_bridges(inst)
        users.ensure_keys(inst)

    def bring_up(node: Node) -> None:
        net.ensure_netns(node)
        net.ensure_private_ns(node)
        netplan.ensure(node)
        systemd.ensure(node)
        net.set_links(node, True)
        net.set_isolated(node, False)
        if node.mnt_ns.exists():
            disks.restore(node)
        daemons.ensure_hostkey(node)
        daemons.ensure_authorized(node)
        if inst.users:
            users.ensure(node, inst.users)
        daemons.stop_hang(node)
        daemons.start_sshd(node)
        if inst.docker:
            daemons.start_dockerd(node)
        if a.simhw:
            simhw.install(node, a.simhw)

    parallel(bring_up, inst.all_nodes())
    if inst.docker:
        tar = baseimage.ensure_rootfs()
        nodes = inst.all_nodes()
        daemons.import_base(nodes[0], nodes[1:], tar, baseimage.tags())
        baseimage.ensure_image_inputs()
    inv, kh = write_inventory(inst, Path(a.inventory_dir) if a.inventory_dir else None)
    print(f"testbed {inst.name}: {inst.nodes} node(s) up in {time.monotonic() - t0:.1f}s"
          f"{' with docker' if inst.docker else ''}; fabric: {_describe(inst)}")
    print(f"  inventory:   {inv}")
    print(f"  known_hosts: {kh}")
    for name in inst.users:
        print(f"  user {name}:{' ' * max(1, 8 - len(name))}ssh key {users.key(inst, name)}"
              f"{' (in group docker)' if inst.docker else ''}")
    print(f"  try:         dgxcluster -i {os.path.relpath(inv)} exec -- hostname")
    return 0


def _remove_node(node: Node) -> None:
    daemons.stop_hang(node)
    if node.docker_sock.exists():
        daemons.stop_dockerd(node, remove_containers=True)
    daemons.stop_sshd(node)
    daemons.kill_all(node)
    net.remove_node_ns(node)
    if node.dir.exists():
        run(["rm", "-rf", "--one-file-system", str(node.dir)], check=False, timeout=600)


def cmd_down(a: argparse.Namespace) -> int:
    targets = instances() if a.all else [i for i in [Instance.load(a.name)] if i]
    if not targets:
        print(f"testbed {a.name}: nothing to take down")
        return 0
    for inst in targets:
        with locked():
            parallel(_remove_node, inst.all_nodes())
            net.remove_bridges(inst)
            inv, kh = inventory_paths(inst)
            for p in (inv, kh):
                if p.exists():
                    p.unlink()
            shutil.rmtree(inst.root, ignore_errors=True)
        print(f"testbed {inst.name}: down")
    return 0


def _describe(inst: Instance) -> str:
    if inst.topology in ("ring", "mesh"):
        return f"{inst.topology}, {len(inst.wiring()) // 2} cables (port 0 to the next node's port 1)"
    ports = sorted({inst.port_of(i) for i in range(1, inst.nodes + 1)})
    return f"{inst.topology}, QSFP port {'/'.join(map(str, ports))}" + (
        f" ({','.join(str(inst.port_of(i)) for i in range(1, inst.nodes + 1))})"
        if len(ports) > 1 else "")


def _node_status(node: Node) -> dict[str, object]:
    return {
        "node": node.name,
        "mgmt_ip": node.mgmt_ip,
        "mgmt_ip6": node.mgmt_ip6,
        "fabric_ip": node.fabric_ip,
        "fabric": [m.ifname for _, m in node.members()],
        "links": "up" if net.links_up(node) else "CUT",
        "sshd": "running" if daemons.sshd_running(node) else "stopped",
        "hung": daemons.hang_pidfile(node).exists(),
        "isolated": net.isolated(node),
        "dockerd": ("running" if daemons.dockerd_running(node) else "stopped")
        if node.inst.docker else "-",
        "simhw": simhw.current(node),
    }


def cmd_status(a: argparse.Namespace) -> int:
    inst = need(a.name)
    rows = [_node_status(n) for n in inst.all_nodes()]
    if a.json:
        print(json.dumps({"name": inst.name, "index": inst.index, "topology": inst.topology,
                          "nodes": rows}, indent=2))
        return 0
    print(f"testbed {inst.name} (index {inst.index}, mtu {inst.mtu}; {_describe(inst)})")
    for r in rows:
        print(f"  {r['node']:<8} {r['mgmt_ip']:<15} fabric {r['fabric_ip']:<15} links {r['links']:<4}"
              f" sshd {r['sshd']:<8}{' HUNG' if r['hung'] else ''}"
              f"{' ISOLATED' if r['isolated'] else ''} dockerd {r['dockerd']}"
              f"{' simhw ' + str(r['simhw']) if r['simhw'] else ''}")
    return 0


def _cut(a: argparse.Namespace, up: bool) -> None:
    inst = need(a.name)
    node = node_of(inst, a.node)
    if a.link:
        peer = node_of(inst, a.link)
        if inst.topology == "switch":
            raise TestbedError("through a switch each node has one cable, to the switch: use "
                               f"--fabric to pull {a.node}'s")
        ends = net.set_cable(inst, node, peer, up)
        if not ends:
            raise TestbedError(f"no cable joins {a.node} and {a.link} ({_describe(inst)})")
        print(f"cable {a.node} - {a.link}: {'plugged back' if up else 'pulled'} "
              f"({', '.join(ends)})")
    elif a.fabric:
        net.set_links(node, up, fabric_only=True)
        print(f"{a.node}: fabric cable(s) {'plugged back' if up else 'pulled'}")
    else:
        net.set_links(node, up)
        print(f"{a.node}: {'back on' if up else 'cut off'} the network")


def cmd_cut(a: argparse.Namespace) -> int:
    _cut(a, False)
    return 0


def cmd_heal(a: argparse.Namespace) -> int:
    _cut(a, True)
    return 0


def cmd_sshd(a: argparse.Namespace) -> int:
    node = node_of(need(a.name), a.node)
    (daemons.start_sshd if a.action == "start" else daemons.stop_sshd)(node)
    print(f"{a.node}: sshd {a.action}ed" if a.action == "start" else f"{a.node}: sshd stopped")
    return 0


def cmd_dockerd(a: argparse.Namespace) -> int:
    node = node_of(need(a.name), a.node)
    if a.action == "start":
        daemons.start_dockerd(node)
    else:
        daemons.stop_dockerd(node)
    print(f"{a.node}: dockerd {'started' if a.action == 'start' else 'stopped'}")
    return 0


def cmd_reboot(a: argparse.Namespace) -> int:
    inst = need(a.name)
    nodes = [node_of(inst, n) for n in a.node]
    lines: dict[str, str] = {}
    parallel(lambda node: lines.__setitem__(node.name, systemd.reboot(node, inst.docker)), nodes)
    for node in nodes:
        print(lines[node.name])
    return 0


def cmd_isolate(a: argparse.Namespace) -> int:
    node = node_of(need(a.name), a.node)
    net.set_isolated(node, True)
    print(f"{a.node}: unreachable from this machine ({node.mgmt_ip} drops it); the other nodes "
          "still reach it: use one as a jump host")
    return 0


def cmd_unisolate(a: argparse.Namespace) -> int:
    net.set_isolated(node_of(need(a.name), a.node), False)
    print(f"{a.node}: reachable from this machine again")
    return 0


def cmd_hang(a: argparse.Namespace) -> int:
    node = node_of(need(a.name), a.node)
    if a.during_sftp_write:
        daemons.arm_sftp_trap(node, a.during_sftp_write)
        print(f"{a.node}: stops answering (sshd frozen) once an SFTP client opens a file "
              f"matching {a.during_sftp_write!r} for writing and starts to write it")
        return 0
    daemons.start_hang(node)
    print(f"{a.node}: port 22 now accepts TCP and never answers")
    return 0


def cmd_unhang(a: argparse.Namespace) -> int:
    node = node_of(need(a.name), a.node)
    daemons.stop_hang(node)
    daemons.start_sshd(node)
    print(f"{a.node}: sshd answering again")
    return 0


def cmd_rekey(a: argparse.Namespace) -> int:
    inst = need(a.name)
    node = node_of(inst, a.node)
    daemons.stop_sshd(node)
    daemons.ensure_hostkey(node, regenerate=True)
    daemons.start_sshd(node)
    if a.update_known_hosts:
        write_inventory(inst)
    print(f"{a.node}: new host key{' (known_hosts updated)' if a.update_known_hosts else ''}")
    return 0


def cmd_mtu(a: argparse.Namespace) -> int:
    node = node_of(need(a.name), a.node)
    run(["ip", "-n", node.netns, "link", "set", a.interface, "mtu", str(a.mtu)])
    print(f"{a.node}: {a.interface} mtu {a.mtu}")
    return 0


def cmd_simhw(a: argparse.Namespace) -> int:
    node = node_of(need(a.name), a.node)
    if a.profile == "off":
        simhw.remove(node)
        print(f"{a.node}: simulated hardware removed")
        return 0
    simhw.install(node, a.profile)
    print(f"{a.node}: simulated hardware, profile {a.profile} ({simhw.PROFILES[a.profile].help}): "
          f"{', '.join(simhw.TOOLS)} in /usr/local/sbin")
    return 0


def cmd_exec(a: argparse.Namespace) -> int:
    node = node_of(need(a.name), a.node)
    argv = a.command[1:] if a.command[:1] == ["--"] else a.command
    if not argv:
        raise TestbedError("exec needs a command after --")
    os.execvp("nsenter", [*node.nsenter(), *argv])
    return 0  # pragma: no cover


def cmd_seed_model(a: argparse.Namespace) -> int:
    """A small synthetic model in NODE's Hugging Face cache, as `hf download` leaves it."""
    node = node_of(need(a.name), a.node)
    commit = hashlib.sha1(a.repo.encode()).hexdigest()
    files: dict[str, int | str] = {
        "config.json": json.dumps({"model_type": "standin", "repo": a.repo}),
        "tokenizer_config.json": "{}",
        "model.safetensors": a.size,
    }
    argv = hfcache.build_argv(a.hub, hfcache.spec(a.repo, files, commit=commit))
    run([*node.nsenter(), *argv])
    print(f"{a.node}: synthetic {a.repo} (commit {commit[:12]}, {a.size} B of weights) in {a.hub}")
    return 0


def cmd_ps(a: argparse.Namespace) -> int:
    """Processes living in NODE's network namespace (nodes share the host's PID namespace)."""
    node = node_of(need(a.name), a.node)
    for pid in net.netns_pids(node):
        try:
            args = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
        except OSError:
            continue
        print(f"{pid} {args}")
    return 0


def cmd_ssh_config(a: argparse.Namespace) -> int:
    """An operator's home for the testbed: DIR/.ssh/config with an alias per node (plus
    ProxyJump where asked) and DIR/inventory.yaml whose hosts are those aliases. Run
    dgxcluster with HOME=DIR, as an operator whose ~/.ssh/config this is."""
    inst = need(a.name)
    jumps = dict(j.split("=", 1) for j in a.jump or [])
    _, kh = inventory_paths(inst)
    key = users.key(inst, a.user) if a.user != "root" else None
    if a.user != "root" and a.user not in inst.users:
        raise TestbedError(f"no user {a.user!r} on testbed {inst.name} (up --user {a.user})")
    try:
        text = ssh_config(inst, jumps, user=a.user, key=key, known_hosts=kh)
    except ValueError as exc:
        raise TestbedError(str(exc)) from None
    home = Path(a.dir).resolve()
    (home / ".ssh").mkdir(parents=True, exist_ok=True, mode=0o700)
    cfg = home / ".ssh" / "config"
    cfg.write_text(text)
    cfg.chmod(0o600)
    inv = home / "inventory.yaml"
    inv.write_text(alias_inventory(inst, kh).replace("  user: root\n", f"  user: {a.user}\n")
                   .replace(f"identity_file: {inst.key}", f"identity_file: {key or inst.key}"))
    print(f"{cfg}\n{inv}\n  try: HOME={home} dgxcluster -i {inv} exec -- hostname")
    return 0


def cmd_tmpfs(a: argparse.Namespace) -> int:
    node = node_of(need(a.name), a.node)
    if a.size == "off":
        disks.restore(node, a.path)
        print(f"{a.node}: {a.path} back on the node's disk")
        return 0
    disks.shrink(node, a.path, a.size)
    print(f"{a.node}: {a.path} is now a {a.size} tmpfs (a small disk: writes past it fail "
          "with ENOSPC)")
    return 0


def cmd_logins(a: argparse.Namespace) -> int:
    """Every SSH login NODE's sshd accepted, one line each, oldest first (from its own log):
    proof that a client did, or did not, get in."""
    node = node_of(need(a.name), a.node)
    for line in daemons.accepted_logins(node):
        print(line)
    return 0


def cmd_env(a: argparse.Namespace) -> int:
    inst = need(a.name)
    inv, kh = inventory_paths(inst)
    print(f"DGXTB_NAME={inst.name}\nDGXCLUSTER_INVENTORY={inv}\nDGXTB_KNOWN_HOSTS={kh}\n"
          f"DGXTB_KEY={inst.key}\nDGXTB_NODES={' '.join(n.mgmt_ip for n in inst.all_nodes())}")
    for name in inst.users:
        print(f"DGXTB_KEY_{name.upper().replace('-', '_')}={users.key(inst, name)}")
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="scripts/testbed",
        description="An emulated DGX cluster on this machine: each node is a set of Linux "
        "namespaces with its own sshd, host key and (with --docker) Docker daemon. "
        "Writes inventory/testbed.yaml for dgxcluster. Needs root.",
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--name", default=argparse.SUPPRESS,
                        help="testbed name, so several can coexist (default: $DGXTB_NAME or 'tb')")
    p.add_argument("--name", default=os.environ.get("DGXTB_NAME", "tb"),
                   help="testbed name, so several can coexist (default: $DGXTB_NAME or 'tb')")
    sub = p.add_subparsers(dest="cmd", required=True)
    real_add = sub.add_parser

    def add_parser(name: str, **kw: object) -> argparse.ArgumentParser:
        return real_add(name, parents=[common], **kw)  # type: ignore[arg-type]

    sub.add_parser = add_parser  # type: ignore[method-assign]
    up = sub.add_parser("up", help="create or repair N nodes (idempotent)")
    up.add_argument("n", type=int)
    up.add_argument("--docker", action="store_true", help="also run a dockerd per node")
    up.add_argument("--mtu", type=int, default=9000, help="fabric MTU (default 9000)")
    up.add_argument("--topology", choices=("switch", "direct", "ring", "mesh"),
                    help="how the fabric is cabled: switch (default: one bridge per rail, every "
                    "node's QSFP port on it), direct (two nodes), ring (port 0 of each node to "
                    "port 1 of the next, closed; each cable twin its own bridge and /24), mesh "
                    "(three nodes, every pair cabled); the inventory then says fabric.topology")
    up.add_argument("--ports", metavar="P[,P...]",
                    help="switch/direct: the QSFP port (0 or 1) of each node, or one for all "
                    "(default 1); e.g. --topology direct --ports 1,0 is asymmetric cabling")
    up.add_argument("--simhw", choices=list(simhw.PROFILES),
                    help="also give every node simulated hardware of this profile (auto: "
                    "follows the cabling and cut cables)")
    up.add_argument("--inventory-dir", help="where to write the inventory (default inventory/)")
    up.add_argument("--user", action="append", metavar="NAME",
                    help="also an SSH user NAME (not root, own key, in group docker) on every "
                    "node; repeatable, kept by later `up`s")
    up.set_defaults(fn=cmd_up)
    down = sub.add_parser("down", help="remove every node, daemon and file of the testbed")
    down.add_argument("--all", action="store_true", help="every testbed on this machine")
    down.set_defaults(fn=cmd_down)
    st = sub.add_parser("status", help="show each node's links and daemons")
    st.add_argument("--json", action="store_true")
    st.set_defaults(fn=cmd_status)
    for name, fn, helptext in (("cut", cmd_cut, "take NODE off the network (or, with --fabric "
                                "or --link PEER, pull one of its cables)"),
                               ("heal", cmd_heal, "put NODE back on the network (or plug back "
                                "the cable --fabric/--link names)"),
                               ("hang", cmd_hang, "make NODE's port 22 accept TCP and never answer"),
                               ("unhang", cmd_unhang, "undo hang"),
                               ("isolate", cmd_isolate, "make NODE unreachable from this machine "
                                "but not from the other nodes (reach it through a jump host)"),
                               ("unisolate", cmd_unisolate, "undo isolate")):
        s = sub.add_parser(name, help=helptext)
        s.add_argument("node")
        if name in ("cut", "heal"):
            g = s.add_mutually_exclusive_group()
            g.add_argument("--fabric", action="store_true",
                           help="only NODE's fabric cable(s); management (SSH) stays up")
            g.add_argument("--link", metavar="PEER",
                           help="only the cable between NODE and PEER (ring, mesh, direct): "
                           "both ends lose carrier")
        if name == "hang":
            s.add_argument("--during-sftp-write", metavar="GLOB",
                           help="instead, arm a one-shot trap: NODE stops answering (its sshd "
                           "processes are frozen, connections stay up) when the next SFTP "
                           "write to a file whose name matches GLOB begins (puts write to "
                           "NAME.tmp-* first)")
        s.set_defaults(fn=fn)
    rb = sub.add_parser(
        "reboot", help="power-cut NODE(s) and boot them: every process (containers included) "
        "SIGKILLed at once, dockerd and sshd started again, files kept, then the units enabled "
        "in the node's multi-user.target.wants run (the systemctl double's boot)")
    rb.add_argument("node", nargs="+")
    rb.set_defaults(fn=cmd_reboot)
    for name, fn in (("sshd", cmd_sshd), ("dockerd", cmd_dockerd)):
        s = sub.add_parser(name, help=f"start or stop NODE's {name}")
        s.add_argument("node")
        s.add_argument("action", choices=["start", "stop"])
        s.set_defaults(fn=fn)
    rk = sub.add_parser("rekey", help="give NODE a new host key (a 'changed host key')")
    rk.add_argument("node")
    rk.add_argument("--update-known-hosts", action="store_true")
    rk.set_defaults(fn=cmd_rekey)
    mt = sub.add_parser("mtu", help="set the MTU of one of NODE's interfaces")
    mt.add_argument("node")
    mt.add_argument("interface")
    mt.add_argument("mtu", type=int)
    mt.set_defaults(fn=cmd_mtu)
    sh = sub.add_parser(
        "simhw", help="give NODE simulated RDMA/GPU tools replaying real captures, or remove them",
        description="Put ibv_devinfo, ibdev2netdev, ethtool and nvidia-smi into NODE's "
        "/usr/local/sbin, printing real DGX Spark captures (tests/fixtures/real) and saying "
        "'simulated hardware' on stderr. Interfaces, MTU and pings stay real. Profiles: "
        + "; ".join(f"{p.name}: {p.help}" for p in simhw.PROFILES.values()) + "; off: remove. "
        + "NCCL log profiles (container.env DGXCLUSTER_STANDIN_NCCL, replayed by the image's NCCL "
        + "stand-in): " + "; ".join(f"{k}: {v}" for k, v in simhw.NCCL_PROFILES.items()) + ".")
    sh.add_argument("node")
    sh.add_argument("profile", choices=[*simhw.PROFILES, "off"])
    sh.set_defaults(fn=cmd_simhw)
    ex = sub.add_parser("exec", help="run a command inside NODE's namespaces")
    ex.add_argument("node")
    ex.add_argument("command", nargs=argparse.REMAINDER)
    ex.set_defaults(fn=cmd_exec)
    sm = sub.add_parser(
        "seed-model", help="put a small synthetic model into NODE's Hugging Face cache",
        description="Lay out REPO in NODE's HF cache exactly as `hf download` does (blobs, "
        "snapshots/<commit>, refs/main), with made-up weights: the testbed has no internet, and "
        "its vLLM stand-in loads nothing. `dgxcluster model sync REPO` then copies it.")
    sm.add_argument("node")
    sm.add_argument("repo")
    sm.add_argument("--hub", default="/root/.cache/huggingface/hub")
    sm.add_argument("--size", type=int, default=1 << 20, help="bytes of weights (default 1 MiB)")
    sm.set_defaults(fn=cmd_seed_model)
    ps = sub.add_parser("ps", help="list the processes in NODE's network namespace")
    ps.add_argument("node")
    ps.set_defaults(fn=cmd_ps)
    sc = sub.add_parser("ssh-config", help="write an operator's ~/.ssh/config (node aliases, "
                        "ProxyJump) and an inventory using the aliases, under DIR")
    sc.add_argument("dir", help="the operator's home (HOME=DIR for dgxcluster)")
    sc.add_argument("--jump", action="append", metavar="NODE=VIA",
                    help="ProxyJump VIA for NODE (repeatable; VIA may be a chain a,b)")
    sc.add_argument("--user", default="root", help="log in as this user (see up --user)")
    sc.set_defaults(fn=cmd_ssh_config)
    tf = sub.add_parser("tmpfs", help="put a small disk (a SIZE tmpfs) over PATH on NODE, or "
                        "'off'; for disk-full faults (up removes it)")
    tf.add_argument("node")
    tf.add_argument("path", help="absolute path inside the node, e.g. /root/.cache/huggingface")
    tf.add_argument("size", help="e.g. 64m, or off")
    tf.set_defaults(fn=cmd_tmpfs)
    lg = sub.add_parser("logins", help="list the SSH logins NODE's sshd accepted (from its log)")
    lg.add_argument("node")
    lg.set_defaults(fn=cmd_logins)
    en = sub.add_parser("env", help="print the testbed's paths as shell variables")
    en.set_defaults(fn=cmd_env)
    return p


def main(argv: list[str] | None = None) -> int:
    a = parser().parse_args(argv)
    if not __import__("re").match(r"^[a-z][a-z0-9]{0,5}$", a.name):
        print("scripts/testbed: --name must be 1-6 lowercase letters/digits, starting with a letter",
              file=sys.stderr)
        return 2
    try:
        return int(a.fn(a))
    except TestbedError as exc:
        print(f"scripts/testbed: {exc}", file=sys.stderr)
        return 1
