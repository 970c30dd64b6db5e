"""Each node's own /etc/netplan and the netplan stand-in, so `dgxcluster fabric plan|apply`
and verify-ib's netplan check run against real files on the testbed.

The host has no /etc/netplan (Debian): `up` creates the empty directory once, as a mount
point; inside each node's mount namespace the node's own `<node dir>/etc/netplan` is bound
over it. `up` writes the node's `40-cx7.yaml` (mode 0600) for the addresses it configures,
once: a file `fabric apply` wrote later is left alone.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from testbed_lib.layout import Node
from testbed_lib.sh import run

HOST_DIR = Path("/etc/netplan")
FILE = "40-cx7.yaml"
STANDIN = Path(__file__).resolve().parent / "netplan_standin.py"


def node_dir(node: Node) -> Path:
    return node.dir / "etc" / "netplan"


def render(node: Node) -> str:
    lines = [f"# Written by scripts/testbed for {node.name} (testbed, not DGX hardware): the "
             "CX-7 fabric it configured.", "network:", "  version: 2", "  ethernets:"]
    for _, m in node.members():
        lines += [f"    {m.ifname}:", "      dhcp4: no", f"      mtu: {node.inst.mtu}",
                  f"      addresses: [{m.ip}]"]
    return "\n".join(lines) + "\n"


def _mounted(node: Node) -> bool:
    out = run([*node.nsenter(), "cat", "/proc/self/mountinfo"], check=False).stdout
    return any(ln.split()[4] == str(HOST_DIR) for ln in out.splitlines() if len(ln.split()) > 4)


def ensure(node: Node) -> None:
    d = node_dir(node)
    d.mkdir(parents=True, exist_ok=True)
    d.chmod(0o755)
    HOST_DIR.mkdir(mode=0o755, exist_ok=True)
    if not _mounted(node):
        run(["nsenter", f"--mount={node.mnt_ns}", "mount", "--bind", str(d), str(HOST_DIR)])
    f = d / FILE
    if not f.exists():
        f.write_text(render(node))
        f.chmod(0o600)
    target = node.sbin / "netplan"
    if not target.exists() or target.read_bytes() != STANDIN.read_bytes():
        shutil.copyfile(STANDIN, target)
        target.chmod(0o755)
