"""`ray status` (and the dashboard's `/api/cluster_status?format=1`, which returns the same
text): nodes alive, pending and failed, and resource usage such as `0.0/2.0 GPU`.

The text has a `Node status` block whose sections (`Active:`, `Idle:` in newer Ray,
`Pending:`, `Recent failures:`) list entries like ` 1 node_<id>`, then a `Resources` block
whose `Total Usage:` (older Ray: `Usage:`) lists ` used/total NAME`, optionally followed by
`(X used of Y reserved in placement groups)`. `ray status -v` adds per-node `Node: ...`
blocks with their own indented ` Usage:`; those are not added to the totals. Placeholders
look like ` (no pending nodes)`. Before the autoscaler reports, Ray prints "No cluster
status."; that, and anything else unreadable, gives a result whose `error` says so.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

COMMAND = ["ray", "status"]
DASHBOARD_PATH = "/api/cluster_status?format=1"

_SECTION = re.compile(r"^(?P<name>[A-Za-z][A-Za-z _]*):\s*$")
_COUNTED = re.compile(r"^(?P<n>\d+)\s+(?P<what>\S.*)$")
_USAGE = re.compile(
    r"^(?P<used>[0-9.]+)(?P<uunit>[A-Za-z]*)/(?P<total>[0-9.]+)(?P<tunit>[A-Za-z]*)\s+"
    r"(?P<name>\S+)(?:\s+\((?P<note>[^)]*)\))?$"
)
_RESERVED = re.compile(r"(?P<used>[0-9.]+) used of (?P<reserved>[0-9.]+) reserved")
_TOTALS = ("total usage", "usage")


@dataclass(frozen=True)
class Usage:
    used: float
    total: float
    unit: str = ""
    reserved: float | None = None  # held by placement groups (vLLM's workers live there)


@dataclass(frozen=True)
class RayStatus:
    """Parsed status; `error` is set (and the rest empty) when the text was not a report."""

    active: list[str] = field(default_factory=list)  # one entry per node (counts expanded)
    idle: list[str] = field(default_factory=list)  # newer Ray lists idle nodes apart
    pending: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    totals: dict[str, float] = field(default_factory=dict)
    usage: dict[str, Usage] = field(default_factory=dict)
    error: str | None = None

    @property
    def nodes(self) -> int:
        """Nodes alive (active or idle)."""
        return len(self.active) + len(self.idle)

    @property
    def gpus(self) -> float:
        """GPUs Ray counts across the cluster."""
        return self.totals.get("GPU", 0.0)

    @property
    def gpu_usage(self) -> Usage | None:
        return self.usage.get("GPU")


def _not_parsed(command: str, why: str, text: str) -> RayStatus:
    first = next((ln.strip() for ln in text.splitlines() if ln.strip()), "(no output)")
    return RayStatus(error=f"could not parse `{command}`: {why} (first line: {first[:120]!r})")


def _expand(entries: list[str]) -> list[str]:
    out: list[str] = []
    for e in entries:
        m = _COUNTED.match(e)
        out.extend([m.group("what")] * int(m.group("n")) if m else [e])
    return out


def parse(text: str, command: str = "ray status") -> RayStatus:
    if "No cluster status" in text:
        return _not_parsed(command, "No cluster status yet (the autoscaler has not reported)",
                           text)
    if "Node status" not in text:
        return _not_parsed(command, "no 'Node status' section", text)
    sections: dict[str, list[str]] = {}
    current: str | None = None
    for raw in text.splitlines():
        line = raw.rstrip()
        if not line.strip() or set(line.strip()) <= {"-", "="}:
            continue
        if not line.startswith(" "):
            m = _SECTION.match(line)
            # a header such as "Active:" opens a section; anything else ("Node: ...") closes it
            current = m.group("name").strip().lower() if m else None
            if current is not None:
                sections.setdefault(current, [])
            continue
        entry = line.strip()
        if current is None or (entry.startswith("(") and entry.endswith(")")):
            continue  # "(no pending nodes)", or lines of a per-node block
        sections[current].append(entry)
    usage: dict[str, Usage] = {}
    for entry in next((sections[s] for s in _TOTALS if s in sections), []):
        u = _USAGE.match(entry)
        if not u:
            continue
        note = u.group("note") or ""
        r = _RESERVED.search(note)
        usage[u.group("name")] = Usage(float(u.group("used")), float(u.group("total")),
                                       u.group("tunit"), float(r.group("reserved")) if r else None)
    status = RayStatus(
        active=_expand(sections.get("active", []) + sections.get("healthy", [])),
        idle=_expand(sections.get("idle", [])),
        pending=_expand(sections.get("pending", [])),
        failures=sections.get("recent failures", []),
        totals={name: u.total for name, u in usage.items()},
        usage=usage,
    )
    if not status.nodes and not usage:
        return _not_parsed(command, "no active nodes or resources found", text)
    return status


def parse_dashboard(body: str) -> RayStatus:
    """The dashboard's JSON answer to `GET /api/cluster_status?format=1`."""
    command = f"GET {DASHBOARD_PATH}"
    try:
        text = json.loads(body)["data"]["clusterStatus"]
    except (ValueError, KeyError, TypeError):
        return _not_parsed(command, "not the dashboard's JSON", body)
    if not isinstance(text, str):
        return _not_parsed(command, "clusterStatus is not text", body)
    return parse(text, command)
