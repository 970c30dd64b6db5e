"""The one SSH round `status` makes per node: a fixed script and the parser of its output.

The script prints sections (`@@ name`), each followed by `@@ rc N`:
  now         the node's clock (uptimes are computed against it, not the operator's)
  images      `docker image ls` of the inventory's image repository (tag -> image ID)
  containers  `docker inspect` of the cluster's labelled containers (name, state, labels,
              image), never `Config.Env`, which holds secrets
  gpu         `nvidia-smi` (its table, parsed by facts.nvidia_smi)
  ray         head node only: the Ray dashboard's cluster status, asked on the head's own
              loopback, so the dashboard need not be exposed to the operator's network
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone

from dgxcluster.naming import LABEL_CLUSTER
from dgxcluster.remote.command import shell

_IMAGES = "{{.Repository}}\t{{.Tag}}\t{{.ID}}"
_INSPECT = (
    "{{json .Name}}\t{{json .State}}\t{{json .Config.Labels}}\t{{json .Image}}\t"
    "{{json .Config.Image}}"
)

# $1 image repository  $2 label filter  $3 image format  $4 inspect format
# $5 dashboard port ('' on nodes other than the head)
STATUS = r"""
printf '@@ now %s\n' "$(date +%s)"
echo '@@ images'
docker image ls --no-trunc --format "$3" "$1" 2>&1
printf '\n@@ rc %s\n' "$?"
echo '@@ containers'
ids=$(docker ps -aq --no-trunc --filter "$2" 2>/dev/null)
if [ -n "$ids" ]; then docker inspect --format "$4" $ids 2>&1; fi
printf '\n@@ rc %s\n' "$?"
echo '@@ gpu'
timeout 10 nvidia-smi 2>&1
printf '\n@@ rc %s\n' "$?"
if [ -n "$5" ]; then
  echo '@@ ray'
  u="http://127.0.0.1:$5/api/cluster_status?format=1"
  if command -v curl >/dev/null 2>&1; then curl -sS --max-time 5 "$u" 2>&1
  else python3 -c 'import sys,urllib.request as r;print(r.urlopen(sys.argv[1],timeout=5).read().decode())' \
    "$u" 2>&1
  fi
  printf '\n@@ rc %s\n' "$?"
fi
"""


def status_argv(image_repo: str, cluster: str, dashboard_port: int | None) -> list[str]:
    return shell(
        STATUS,
        image_repo,
        f"label={LABEL_CLUSTER}={cluster}",
        _IMAGES,
        _INSPECT,
        str(dashboard_port) if dashboard_port else "",
    )


@dataclass(frozen=True)
class Section:
    text: str
    rc: int | None


@dataclass(frozen=True)
class Container:
    name: str
    state: str
    running: bool
    started_at: datetime | None
    finished_at: datetime | None
    exit_code: int | None
    health: str | None
    labels: dict[str, str]
    image_id: str
    image_ref: str


@dataclass
class NodeProbe:
    """What one node reported, parsed; sections missing from the output stay None."""

    now: int | None = None
    sections: dict[str, Section] = field(default_factory=dict)

    def section(self, name: str) -> Section | None:
        return self.sections.get(name)


_MARK = re.compile(r"^@@ (?P<name>[a-z]+)(?: (?P<value>.*))?$")


def parse(text: str) -> NodeProbe:
    """Split the script's output into sections (pure)."""
    probe = NodeProbe()
    current: str | None = None
    body: list[str] = []
    for line in text.splitlines():
        m = _MARK.match(line)
        if not m:
            if current is not None:
                body.append(line)
            continue
        name, value = m.group("name"), m.group("value")
        if name == "now":
            probe.now = int(value) if value and value.isdigit() else None
        elif name == "rc":
            if current is not None:
                rc = int(value) if value and value.lstrip("-").isdigit() else None
                probe.sections[current] = Section("\n".join(body).strip("\n"), rc)
            current, body = None, []
        else:
            current, body = name, []
    if current is not None:  # cut short: keep what came, without an exit status
        probe.sections[current] = Section("\n".join(body).strip("\n"), None)
    return probe


def parse_images(text: str) -> dict[str, str]:
    """`repo<TAB>tag<TAB>id` lines -> {tag: image id}."""
    tags: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split("\t")
        if len(parts) == 3 and parts[1] and parts[1] != "<none>":
            tags[parts[1]] = parts[2]
    return tags


def parse_containers(text: str) -> list[Container]:
    out: list[Container] = []
    for line in text.splitlines():
        parts = line.split("\t")
        if len(parts) != 5:
            continue
        try:
            name, state, labels, image_id, image_ref = (json.loads(p) for p in parts)
        except ValueError:
            continue
        if not isinstance(state, dict):
            continue
        health = state.get("Health")
        out.append(
            Container(
                name=str(name).lstrip("/"),
                state=str(state.get("Status", "unknown")),
                running=bool(state.get("Running")),
                started_at=parse_time(state.get("StartedAt")),
                finished_at=parse_time(state.get("FinishedAt")),
                exit_code=state.get("ExitCode") if isinstance(state.get("ExitCode"), int) else None,
                health=health.get("Status") if isinstance(health, dict) else None,
                labels={str(k): str(v) for k, v in (labels or {}).items()},
                image_id=str(image_id or ""),
                image_ref=str(image_ref or ""),
            )
        )
    return out


_TIME = re.compile(r"^(?P<base>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(?P<frac>\d+))?(?P<tz>Z|[+-]\d\d:\d\d)$")


def parse_time(value: object) -> datetime | None:
    """Docker's RFC 3339 times (nanoseconds, `Z`); the zero time `0001-01-01...` is None."""
    if not isinstance(value, str):
        return None
    m = _TIME.match(value)
    if not m or value.startswith("0001-"):
        return None
    frac = (m.group("frac") or "0")[:6].ljust(6, "0")
    tz = "+00:00" if m.group("tz") == "Z" else m.group("tz")
    try:
        return datetime.fromisoformat(f"{m.group('base')}.{frac}{tz}").astimezone(timezone.utc)
    except ValueError:
        return None
