"""Simulated hardware: executables named like the real tools, replaying real captures.

Testbed nodes have no RDMA device and no GPU. `simhw NODE PROFILE` puts `ibv_devinfo`,
`ibdev2netdev`, `ethtool` and `nvidia-smi` into the node's private /usr/local/sbin (first
on sshd's PATH). Each prints output recorded on a real DGX Spark (tests/fixtures/real, the
source line and shell prompts dropped; faults are edits of those captures) and says
"simulated hardware" on stderr, so dgxcluster can label what it read. Interfaces, addresses,
MTU and pings stay real. `simhw NODE off` removes them.

NCCL has no tool on the node: it runs inside verify-ib --bandwidth's containers, which cannot
see a node's /usr/local/sbin. The testbed image carries an NCCL stand-in instead
(images/testbed/standin/nccl_standin.py) that replays the NCCL log of one of NCCL_PROFILES,
chosen with the inventory's container.env DGXCLUSTER_STANDIN_NCCL (like the vLLM stand-in's
tunables); it follows the container's NCCL_IB_HCA as NCCL does.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from testbed_lib.layout import Node
from testbed_lib.sh import TestbedError

REPO_ROOT = Path(__file__).resolve().parents[2]
CAPTURES = REPO_ROOT / "tests" / "fixtures" / "real"
TOOLS = ("ibv_devinfo", "ibdev2netdev", "ethtool", "nvidia-smi")
DATA = ".simhw"
PORT1 = ("rocep1s0f1", "roceP2p1s0f1")
PORT0 = ("rocep1s0f0", "roceP2p1s0f0")
NETDEV = {"rocep1s0f0": "enp1s0f0np0", "rocep1s0f1": "enp1s0f1np1",
          "roceP2p1s0f0": "enP2p1s0f0np0", "roceP2p1s0f1": "enP2p1s0f1np1"}

F_DEVINFO_PORT1 = "ibv_devinfo_dgx_spark_port1_up_port0_down_mtu9000_invocarem_spark1.txt"
F_DEVINFO_ALL = "ibv_devinfo_dgx_spark_all4_active_mtu1500_elizabetht.txt"
F_IBDEV_PORT1 = "ibdev2netdev_dgx_spark_port1_up_playbook.txt"
F_IBDEV_ALL = "ibdev2netdev_dgx_spark_all_up_two_cables_playbook.txt"
F_ETHTOOL = "ethtool_speed_dgx_spark_multi_sparks_playbook.txt"
F_SMI = "nvidia-smi_gb10_with_processes_obrienlabs.txt"
#: NCCL log profiles the testbed image's NCCL stand-in replays (DGXCLUSTER_STANDIN_NCCL).
NCCL_PROFILES = {
    "ngc-ibext": "an NGC vLLM image's NCCL: external IB plugin IBext_v11, channels over the "
                 "twins NCCL_IB_HCA names (both: both rails)",
    "socket": "the TCP socket fallback (the default: no /dev/infiniband in a testbed container)",
}


def capture(name: str) -> str:
    """A capture's text as the tool printed it: no source line, no shell prompt lines."""
    path = CAPTURES / name
    if not path.exists():
        raise TestbedError(f"capture {path} is missing (simulated hardware replays it)")
    lines = path.read_text().splitlines()[1:]
    return "\n".join(ln for ln in lines if not re.match(r"^\S+@\S+:.*\$ ", ln)) + "\n"


def speed_lines() -> dict[str, str]:
    """The real `Speed:` lines of the ethtool capture, by speed ('100000', '200000')."""
    out = {}
    for ln in capture(F_ETHTOOL).splitlines():
        if m := re.match(r"^\s*Speed: (\d+)Mb/s$", ln):
            out[m.group(1)] = ln
    return out


def set_state(devinfo: str, device: str, active: bool) -> str:
    """Edit one device's port state in an ibv_devinfo capture, as a real port change shows."""
    blocks = devinfo.split("\n\n")
    for i, b in enumerate(blocks):
        if re.search(rf"^hca_id:\t{re.escape(device)}$", b, re.M):
            b = re.sub(r"(\tstate:\t+)PORT_\w+ \(\d\)", r"\g<1>" + (
                "PORT_ACTIVE (4)" if active else "PORT_DOWN (1)"), b)
            b = re.sub(r"(\tactive_mtu:\t+)\d+ \(\d\)", r"\g<1>" + (
                "4096 (5)" if active else "1024 (3)"), b)
            blocks[i] = b
    return "\n\n".join(blocks)


def set_link(ibdev: str, device: str, up: bool) -> str:
    return re.sub(rf"^({re.escape(device)} port 1 ==> \S+) \((?:Up|Down)\)$",
                  rf"\1 ({'Up' if up else 'Down'})", ibdev, flags=re.M)


@dataclass
class Profile:
    name: str
    help: str
    sources: list[str]
    build: Callable[[], dict[str, str]]


def _ethtool(speeds: dict[str, str | None]) -> dict[str, str]:
    """Per-interface `ethtool IFACE` output around a real Speed line (None: no link)."""
    return {iface: f"Settings for {iface}:\n{line or chr(9) + 'Speed: Unknown!'}\n"
            for iface, line in speeds.items()}


def _cabled(active: tuple[str, ...], speed: str | None) -> dict[str, str]:
    devinfo, ibdev = capture(F_DEVINFO_PORT1), capture(F_IBDEV_PORT1)
    for dev in PORT0 + PORT1:
        devinfo = set_state(devinfo, dev, dev in active)
        ibdev = set_link(ibdev, dev, dev in active)
    line = speed_lines()[speed] if speed else None
    files = {"ibv_devinfo": devinfo, "ibdev2netdev": ibdev, "nvidia-smi": capture(F_SMI)}
    files.update({f"ethtool/{n}": t for n, t in _ethtool(
        {NETDEV[d]: (line if d in active else None) for d in PORT0 + PORT1}).items()})
    return files


def _all_up() -> dict[str, str]:
    line = speed_lines()["200000"]
    files = {"ibv_devinfo": capture(F_DEVINFO_ALL), "ibdev2netdev": capture(F_IBDEV_ALL),
             "nvidia-smi": capture(F_SMI)}
    files.update({f"ethtool/{n}": t for n, t in _ethtool(dict.fromkeys(NETDEV.values(), line)).items()})
    return files


def _auto() -> dict[str, str]:
    """Per device, its block as captured with the port ACTIVE and DOWN: the scripts pick one
    by the carrier of the device's interface, live (see `_auto_script`)."""
    devinfo = capture(F_DEVINFO_PORT1)
    files = {"nvidia-smi": capture(F_SMI), "ethtool/speed": speed_lines()["200000"] + "\n",
             "devices": " ".join(PORT0[:1] + PORT1[:1] + PORT0[1:] + PORT1[1:]) + "\n"}
    for dev in PORT0 + PORT1:
        for state, active in (("up", True), ("down", False)):
            text = set_state(devinfo, dev, active)
            block = next(b for b in text.split("\n\n") if b.startswith(f"hca_id:\t{dev}\n"))
            files[f"devinfo/{dev}.{state}"] = block.rstrip("\n") + "\n"
        files[f"netdev/{dev}"] = NETDEV[dev]
    return files


AUTO = "auto"
PROFILES = {p.name: p for p in [
    Profile("healthy", "cable in QSFP port 1, both twins PORT_ACTIVE at MTU 4096, 200G",
            [F_DEVINFO_PORT1, F_IBDEV_PORT1, F_ETHTOOL, F_SMI], lambda: _cabled(PORT1, "200000")),
    Profile("100g", "as healthy, but the link negotiated 100000Mb/s",
            [F_DEVINFO_PORT1, F_IBDEV_PORT1, F_ETHTOOL, F_SMI], lambda: _cabled(PORT1, "100000")),
    Profile("port1-down", "no link on port 1 (both twins PORT_DOWN; edited capture)",
            [F_DEVINFO_PORT1, F_IBDEV_PORT1, F_SMI], lambda: _cabled((), None)),
    Profile("port0-cabled", "cable in QSFP port 0 instead of 1 (edited capture)",
            [F_DEVINFO_PORT1, F_IBDEV_PORT1, F_ETHTOOL, F_SMI], lambda: _cabled(PORT0, "200000")),
    Profile("all-up", "both QSFP ports cabled, all 4 twins ACTIVE, RoCE MTU 1024 (MTU 1500)",
            [F_DEVINFO_ALL, F_IBDEV_ALL, F_ETHTOOL, F_SMI], _all_up),
    Profile(AUTO, "follows the testbed's cabling, live: a twin is PORT_ACTIVE at MTU 4096 and "
            "200G while its interface has carrier, PORT_DOWN when its cable is cut or absent",
            [F_DEVINFO_PORT1, F_IBDEV_PORT1, F_ETHTOOL, F_SMI], _auto),
]}

#: `carrier NETDEV`: true while the node's interface has a link (LOWER_UP), as a real
#: CX-7 port has while its cable is plugged into a live peer.
_CARRIER = ('carrier() { ip -o link show dev "$1" 2>/dev/null | grep -q "[<,]LOWER_UP[,>]"; }\n')


def _auto_script(tool: str, data: str) -> str:
    if tool == "ibv_devinfo":
        return (_CARRIER + f'd="{data}"; first=1\n'
                'for dev in $(cat "$d/devices"); do nd=$(cat "$d/netdev/$dev")\n'
                '  if carrier "$nd"; then s=up; else s=down; fi\n'
                '  [ "$first" = 1 ] || echo; first=0; cat "$d/devinfo/$dev.$s"; done\n')
    if tool == "ibdev2netdev":
        return (_CARRIER + f'd="{data}"\n'
                'for dev in roceP2p1s0f0 roceP2p1s0f1 rocep1s0f0 rocep1s0f1; do '
                'nd=$(cat "$d/netdev/$dev")\n'
                '  if carrier "$nd"; then s=Up; else s=Down; fi\n'
                '  echo "$dev port 1 ==> $nd ($s)"; done\n')
    if tool == "ethtool":
        return (_CARRIER + 'iface=""; for a in "$@"; do case "$a" in -*) ;; *) iface="$a";; '
                'esac; done\n'
                'if ! ip -o link show dev "$iface" >/dev/null 2>&1; then\n'
                '  echo "netlink error: no device matches name (offset 24)" >&2\n'
                '  echo "netlink error: No such device" >&2; exit 1; fi\n'
                'echo "Settings for $iface:"\n'
                f'if carrier "$iface"; then cat "{data}/ethtool/speed"; '
                'else printf "\\tSpeed: Unknown!\\n"; fi\n')
    return f'cat "{data}/{tool}"\n'



def _script(tool: str, profile: str, sources: str) -> str:
    note = f"dgxtb: simulated hardware (profile {profile}): {tool} replays {sources}"
    if profile == AUTO:
        return f"#!/bin/sh\n# {note}\necho '{note}' >&2\n{_auto_script(tool, '/usr/local/sbin/' + DATA)}"
    if tool == "ethtool":
        body = (
            'iface=""; for a in "$@"; do case "$a" in -*) ;; *) iface="$a";; esac; done\n'
            'case "$iface" in ""|*/*) echo "ethtool: bad interface" >&2; exit 1;; esac\n'
            f'f="/usr/local/sbin/{DATA}/ethtool/$iface"\n'
            'if [ -f "$f" ]; then cat "$f"; exit 0; fi\n'
            'echo "netlink error: no device matches name (offset 24)" >&2\n'
            'echo "netlink error: No such device" >&2\nexit 1\n')
    else:
        body = f'cat "/usr/local/sbin/{DATA}/{tool}"\n'
    return f"#!/bin/sh\n# {note}\necho '{note}' >&2\n{body}"


def install(node: Node, profile: str) -> list[str]:
    if profile not in PROFILES:
        raise TestbedError(f"unknown profile {profile!r} ({', '.join(PROFILES)}, or off)")
    p = PROFILES[profile]
    remove(node)
    data = node.sbin / DATA
    for sub in ("ethtool", "devinfo", "netdev"):
        (data / sub).mkdir(parents=True, exist_ok=True)
    for rel, text in p.build().items():
        (data / rel).write_text(text)
    (data / "profile").write_text(profile + "\n")
    source = {"ibv_devinfo": p.sources[0], "ibdev2netdev": p.sources[1], "ethtool": F_ETHTOOL,
              "nvidia-smi": F_SMI}
    for tool in TOOLS:
        path = node.sbin / tool
        path.write_text(_script(tool, profile, f"tests/fixtures/real/{source[tool]}"))
        path.chmod(0o755)
    return [str(node.sbin / t) for t in TOOLS]


def remove(node: Node) -> None:
    for tool in TOOLS:
        (node.sbin / tool).unlink(missing_ok=True)
    shutil.rmtree(node.sbin / DATA, ignore_errors=True)


def current(node: Node) -> str | None:
    f = node.sbin / DATA / "profile"
    return f.read_text().strip() if f.exists() else None
