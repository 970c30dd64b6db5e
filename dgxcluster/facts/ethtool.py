"""`ethtool IFACE`: the negotiated link speed (200000Mb/s on a healthy CX-7 link).

Lines are `<tab>Key: value` under `Settings for IFACE:`. Speed reads `Unknown!` without a
link. A missing device gives "No such device" (ioctl) or "no device matches name" (netlink).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from dgxcluster.facts import ParseError, content_lines

COMMAND = "ethtool"


def argv(interface: str) -> list[str]:
    return ["ethtool", interface]


@dataclass(frozen=True)
class LinkSettings:
    interface: str | None
    speed_mbps: int | None  # None: unknown (no link)
    speed_text: str
    link_detected: bool | None = None
    duplex: str | None = None
    exists: bool = True


_SPEED = re.compile(r"^\s*Speed:\s*(?P<text>.*?)\s*$")
_SETTINGS = re.compile(r"^\s*Settings for (?P<name>\S+?):\s*$")
_MBPS = re.compile(r"^(?P<n>\d+)\s*Mb/s$", re.IGNORECASE)
_MISSING = ("no such device", "no device matches name")


def parse(text: str) -> LinkSettings:
    name: str | None = None
    speed: str | None = None
    link: bool | None = None
    duplex: str | None = None
    for line in content_lines(text):
        if m := _SETTINGS.match(line):
            name = m.group("name")
        elif (m := _SPEED.match(line)) and speed is None:
            speed = m.group("text")
        elif line.strip().startswith("Link detected:"):
            link = line.split(":", 1)[1].strip().lower() == "yes"
        elif line.strip().startswith("Duplex:"):
            duplex = line.split(":", 1)[1].strip()
    if speed is None:
        lowered = text.lower()
        if any(s in lowered for s in _MISSING):
            return LinkSettings(name, None, "no such device", exists=False)
        raise ParseError(COMMAND, "no 'Speed:' line", text)
    m = _MBPS.match(speed)
    if m:
        return LinkSettings(name, int(m.group("n")), speed, link, duplex)
    if speed.lower().startswith("unknown"):
        return LinkSettings(name, None, speed, link, duplex)
    raise ParseError(COMMAND, f"speed {speed!r} is neither '<n>Mb/s' nor 'Unknown!'", text)
