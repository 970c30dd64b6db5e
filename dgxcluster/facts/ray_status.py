"""`ray status` (and the dashboard's `/api/cluster_status?format=1`, which returns the same
text): nodes alive, pending and failed, and resource usage such as `0.0/2.0 GPU`.

The text has a `Node status` block whose sections (`Active:`, `Idle:` in newer Ray,
`Pending:`, `Recent failures:`) list entries like ` 1 node_<id>`, then a `Resources` block
whose `Total Usage:` (older Ray: `Usage:`) lists ` used/total NAME`, optionally followed by
`(X used of Y reserved in placement groups)`. Placeholders look like ` (no pending nodes)`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from dgxcluster.facts import ParseError, content_lines

COMMAND = "ray status"

_USAGE_SECTIONS = {"usage", "total usage"}
_SECTION = re.compile(r"^(?P<name>[A-Za-z][A-Za-z _]*):\s*$")
_COUNTED = re.compile(r"^\s*(?P<n>\d+)\s+(?P<what>\S.*)$")
_USAGE = re.compile(
    r"^\s*(?P<used>[0-9.]+)(?P<uunit>[A-Za-z]*)/(?P<total>[0-9.]+)(?P<tunit>[A-Za-z]*)\s+"
    r"(?P<name>\S+)(?:\s+\((?P<note>[^)]*)\))?\s*$"
)
_RESERVED = re.compile(r"(?P<used>[0-9.]+) used of (?P<reserved>[0-9.]+) reserved")


@dataclass(frozen=True)
class Usage:
    used: float
    total: float
    unit: str = ""
    reserved: float | None = None  # held by placement groups (vLLM's workers live there)


@dataclass(frozen=True)
class RayStatus:
    active: tuple[str, ...] = ()
    idle: tuple[str, ...] = ()
    healthy: tuple[str, ...] = ()  # Ray 1.x name for alive nodes
    pending: tuple[str, ...] = ()
    failures: tuple[str, ...] = ()
    resources: dict[str, Usage] = field(default_factory=dict)

    @property
    def nodes_alive(self) -> int:
        return sum(_count(e) for e in (*self.active, *self.idle, *self.healthy))

    @property
    def gpus(self) -> Usage | None:
        return self.resources.get("GPU")


def _count(entry: str) -> int:
    m = _COUNTED.match(entry)
    return int(m.group("n")) if m else 1


def parse(text: str) -> RayStatus:
    sections: dict[str, list[str]] = {}
    current: str | None = None
    saw_node_status = False
    for line in content_lines(text):
        if not line.strip() or set(line.strip()) <= {"-", "="}:
            continue
        if line.strip() == "Node status":
            saw_node_status = True
            current = None
            continue
        if line.strip() in ("Resources",) or line.startswith("========"):
            current = None
            continue
        m = _SECTION.match(line)
        if m and not line.startswith(" "):
            current = m.group("name").strip().lower()
            sections.setdefault(current, [])
            continue
        if current is not None and line.startswith(" "):
            entry = line.strip()
            if entry.startswith("(") and entry.endswith(")"):
                continue  # "(no pending nodes)" and friends
            sections[current].append(entry)
    usage_lines = next((sections[s] for s in _USAGE_SECTIONS if s in sections), None)
    if not saw_node_status and usage_lines is None:
        raise ParseError(COMMAND, "no 'Node status' or 'Usage' section", text)
    resources: dict[str, Usage] = {}
    for entry in usage_lines or []:
        u = _USAGE.match(" " + entry)
        if not u:
            continue
        reserved = None
        if u.group("note") and (r := _RESERVED.search(u.group("note"))):
            reserved = float(r.group("reserved"))
        resources[u.group("name")] = Usage(
            float(u.group("used")), float(u.group("total")), u.group("tunit"), reserved
        )
    return RayStatus(
        active=tuple(sections.get("active", ())),
        idle=tuple(sections.get("idle", ())),
        healthy=tuple(sections.get("healthy", ())),
        pending=tuple(sections.get("pending", ())),
        failures=tuple(sections.get("recent failures", ())),
        resources=resources,
    )


def parse_dashboard(body: str) -> RayStatus:
    """The dashboard's JSON answer to `/api/cluster_status?format=1`."""
    try:
        doc = json.loads(body)
        text = doc["data"]["clusterStatus"]
    except (ValueError, KeyError, TypeError):
        raise ParseError("GET /api/cluster_status?format=1", "not the dashboard's JSON", body) \
            from None
    if not isinstance(text, str):
        raise ParseError("GET /api/cluster_status?format=1", "clusterStatus is not text", body)
    if text.strip() == "No cluster status.":
        raise ParseError("GET /api/cluster_status?format=1", "the autoscaler has not reported yet",
                         text)
    return parse(text)
