"""`ip -j addr show`: every net device with its state, MTU and IPv4 addresses.

JSON (`-j`) is what we run: iproute2 has had it since 4.14, so every DGX OS has it. The text
form (`ip addr show`) is parsed too, for captures and for old iproute2 that lacks `-j`.
An IPv4 address line that cannot be read is kept as a problem of its interface, never
dropped: dropping it would make the rail look unaddressed ("no IPv4 address") instead of
saying the address could not be read.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Interface

from dgxcluster.facts import ParseError, content_lines

ARGV = ["ip", "-j", "addr", "show"]
COMMAND = "ip -j addr show"
TEXT_ARGV = ["ip", "addr", "show"]
TEXT_COMMAND = "ip addr show"


@dataclass
class Interface:
    name: str
    mtu: int | None = None
    operstate: str = "UNKNOWN"  # UP, DOWN, UNKNOWN, LOWERLAYERDOWN, ...
    flags: list[str] = field(default_factory=list)
    ipv4: list[IPv4Interface] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # address lines that could not be read

    @property
    def up(self) -> bool:
        """Administratively up with carrier. Some drivers report operstate UNKNOWN while
        working (loopback, some virtual devices), so the flags decide in that case."""
        if self.operstate == "UP":
            return True
        if self.operstate == "UNKNOWN":
            return "UP" in self.flags and "LOWER_UP" in self.flags
        return False

    def has(self, ip: IPv4Address) -> bool:
        return any(i.ip == ip for i in self.ipv4)


def _by_name(ifaces: list[Interface]) -> dict[str, Interface]:
    return {i.name: i for i in ifaces}


def _add(iface: Interface, addr: object, plen: object, shown: str) -> None:
    try:
        if not isinstance(addr, str) or isinstance(plen, bool) or not isinstance(plen, (int, str)):
            raise ValueError(addr)
        iface.ipv4.append(IPv4Interface(f"{addr}/{plen}"))
    except ValueError:
        iface.problems.append(f"unreadable IPv4 address {shown[:120]!r}")


def parse(text: str) -> dict[str, Interface]:
    try:
        data = json.loads(text)
    except ValueError:
        raise ParseError(COMMAND, "not JSON", text) from None
    if not isinstance(data, list):
        raise ParseError(COMMAND, "expected a JSON list of interfaces", text)
    out: list[Interface] = []
    for item in data:
        if not isinstance(item, dict) or not isinstance(item.get("ifname"), str):
            raise ParseError(COMMAND, "an entry has no 'ifname'", text)
        iface = Interface(
            name=item["ifname"],
            mtu=item.get("mtu") if isinstance(item.get("mtu"), int) else None,
            operstate=str(item.get("operstate", "UNKNOWN")).upper(),
            flags=[str(f) for f in item.get("flags", []) if isinstance(f, str)],
        )
        for a in item.get("addr_info", []) or []:
            if isinstance(a, dict) and a.get("family") == "inet":
                _add(iface, a.get("local"), a.get("prefixlen", 32), json.dumps(a))
        out.append(iface)
    return _by_name(out)


_HEAD = re.compile(
    r"^\s*\d+:\s+(?P<name>[^:@\s]+)(?:@\S+)?:\s+<(?P<flags>[^>]*)>(?P<rest>.*)$"
)
_INET = re.compile(r"^\s*inet\s+(?P<addr>\d+\.\d+\.\d+\.\d+)(?:/(?P<plen>\d+))?(?:\s|$)")
_INET_ANY = re.compile(r"^\s*inet\s")


def parse_text(text: str) -> dict[str, Interface]:
    out: list[Interface] = []
    cur: Interface | None = None
    for line in content_lines(text):
        m = _HEAD.match(line)
        if m:
            rest = m.group("rest")
            mtu = re.search(r"\bmtu\s+(\d+)", rest)
            state = re.search(r"\bstate\s+(\S+)", rest)
            cur = Interface(name=m.group("name"), mtu=int(mtu.group(1)) if mtu else None,
                            operstate=state.group(1).upper() if state else "UNKNOWN",
                            flags=[f for f in m.group("flags").split(",") if f])
            out.append(cur)
            continue
        if not _INET_ANY.match(line):
            continue
        if cur is None:
            raise ParseError(TEXT_COMMAND, f"address line before any interface: {line.strip()!r}",
                             text)
        i = _INET.match(line)
        if i is None:
            cur.problems.append(f"unreadable IPv4 address line {line.strip()[:120]!r}")
        else:
            _add(cur, i.group("addr"), i.group("plen") or 32, line.strip())
    if not out:
        raise ParseError(TEXT_COMMAND, "no '<n>: <ifname>: <FLAGS>' line", text)
    return _by_name(out)
