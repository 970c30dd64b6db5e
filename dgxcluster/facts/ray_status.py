"""`ray status`, run inside the head container: which nodes Ray counts and its GPU total."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

COMMAND = ["ray", "status"]

_NODE = re.compile(r"^\s*(\d+)\s+(node_[0-9a-f]+|\S+)\s*$")
# " 0.0/2.0 GPU", " 0B/221.76GiB memory", " 2.0/2.0 GPU (2.0 used of 2.0 reserved in placement groups)"
_RESOURCE = re.compile(r"^\s*([0-9.]+[A-Za-z]*)/([0-9.]+[A-Za-z]*)\s+(\S+)(\s+\(.*\))?\s*$")


@dataclass(frozen=True)
class RayStatus:
    """Parsed `ray status`; `error` is set when the output was not a status report."""

    active: list[str] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    totals: dict[str, float] = field(default_factory=dict)
    error: str | None = None

    @property
    def nodes(self) -> int:
        return len(self.active)

    @property
    def gpus(self) -> float:
        return self.totals.get("GPU", 0.0)


def _number(text: str) -> float | None:
    m = re.match(r"^([0-9.]+)", text)
    if not m:
        return None
    try:
        return float(m.group(1))
    except ValueError:
        return None


def parse(text: str) -> RayStatus:
    """Parse the "Node status" and "Resources / Total Usage" sections."""
    if "Node status" not in text:
        first = next((ln.strip() for ln in text.splitlines() if ln.strip()), "(no output)")
        return RayStatus(error=f"could not parse `ray status`: {first}")
    active: list[str] = []
    pending: list[str] = []
    failures: list[str] = []
    totals: dict[str, float] = {}
    section = ""
    for raw in text.splitlines():
        line = raw.rstrip()
        if not line.startswith(" "):
            # a header such as "Active:" opens a section; anything else closes it
            section = line.strip().rstrip(":")
            continue
        body = line.strip()
        if body.startswith("("):  # "(no pending nodes)", "(no failures)"
            continue
        if section in ("Active", "Pending"):
            m = _NODE.match(line)
            if m:
                (active if section == "Active" else pending).extend([m.group(2)] * int(m.group(1)))
        elif section == "Recent failures":
            failures.append(body)
        elif section == "Total Usage":
            m = _RESOURCE.match(line)
            total = _number(m.group(2)) if m else None
            if m and total is not None:
                totals[m.group(3)] = total
    if not active and not totals:
        return RayStatus(error="could not parse `ray status`: no active nodes or resources found")
    return RayStatus(active=active, pending=pending, failures=failures, totals=totals)
