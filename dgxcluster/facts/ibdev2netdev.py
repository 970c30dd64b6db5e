"""Which net device sits behind each RDMA device: `ibdev2netdev`, else sysfs.

`ibdev2netdev` prints `rocep1s0f1 port 1 ==> enp1s0f1np1 (Up)`; with `-v` the line starts
with the PCI address and adds the adapter, firmware and port state. Where the tool is not
installed, `/sys/class/infiniband/<dev>/device/net/<netdev>` gives the same mapping, and
`/sys/class/infiniband/<dev>/ports/<n>/state` the port state ("4: ACTIVE").
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from dgxcluster.facts import ParseError, content_lines

ARGV = ["ibdev2netdev"]
COMMAND = "ibdev2netdev"

_LINE = re.compile(
    r"^\s*(?:[0-9a-fA-F]{4}:[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-9a-fA-F]\s+)?"
    r"(?P<dev>[A-Za-z0-9_.-]+)\b.*?\bport\s+(?P<port>\d+)"
    r"(?:\s+\((?P<pstate>[A-Z_]+)\))?\s*=+>\s*(?P<net>\S+)(?:\s+\((?P<state>[^)]*)\))?"
)

#: Prints one line per RDMA device and net device: `<dev> <netdev>`, and per port `<dev>
#: port <n> <state text> <link_layer>`. A fixed script: no values are spliced in.
SYSFS_SCRIPT = r"""
for d in /sys/class/infiniband/*; do
  [ -d "$d" ] || continue
  dev=${d##*/}
  for n in "$d"/device/net/*; do [ -e "$n" ] && echo "net $dev ${n##*/}"; done
  for p in "$d"/ports/*; do
    [ -d "$p" ] || continue
    echo "port $dev ${p##*/} $(cat "$p/state" 2>/dev/null | tr -d ':') $(cat "$p/link_layer" 2>/dev/null)"
  done
done
echo "sysfs-done"
"""
SYSFS_ARGV = ["sh", "-c", SYSFS_SCRIPT]
SYSFS_COMMAND = "ls /sys/class/infiniband/*/device/net"


@dataclass(frozen=True)
class Link:
    device: str
    port: int
    netdev: str | None  # None: no net device behind it
    state: str | None = None  # Up / Down as ibdev2netdev says; None if not given


@dataclass(frozen=True)
class SysfsPort:
    device: str
    port: int
    state: str  # ACTIVE, DOWN, INIT, ...
    link_layer: str | None


def parse(text: str) -> list[Link]:
    """Links in output order. Lines that are not mappings (a prompt, a banner) are skipped,
    but output with none at all that is not empty is refused."""
    links: list[Link] = []
    other = 0
    for line in content_lines(text):
        if not line.strip():
            continue
        m = _LINE.match(line)
        if not m:
            other += 1
            continue
        net = m.group("net")
        links.append(Link(device=m.group("dev"), port=int(m.group("port")),
                          netdev=None if net.strip("()").lower() == "none" else net,
                          state=(m.group("state") or m.group("pstate") or None)))
    if not links and other:
        raise ParseError(COMMAND, "no '<dev> port <n> ==> <netdev>' line", text)
    return links


def parse_sysfs(text: str) -> tuple[list[Link], list[SysfsPort]]:
    links: list[Link] = []
    ports: list[SysfsPort] = []
    done = False
    for line in content_lines(text):
        parts = line.split()
        if not parts:
            continue
        if parts[0] == "net" and len(parts) == 3:
            links.append(Link(device=parts[1], port=1, netdev=parts[2]))
        elif parts[0] == "port" and len(parts) >= 3 and parts[2].isdigit():
            rest = parts[3:]
            if rest and rest[0].isdigit():  # "4: ACTIVE" with the colon removed
                rest = rest[1:]
            ports.append(SysfsPort(parts[1], int(parts[2]), rest[0].upper() if rest else "UNKNOWN",
                                   rest[1] if len(rest) > 1 else None))
        elif parts == ["sysfs-done"]:
            done = True
    if not done:
        raise ParseError(SYSFS_COMMAND, "the listing did not finish", text)
    return links, ports


def netdev_of(links: list[Link], device: str) -> str | None:
    return next((ln.netdev for ln in links if ln.device == device and ln.netdev), None)
