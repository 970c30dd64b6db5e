"""The one SSH round `status` makes per node: a fixed script and the parser of its output.

The script prints sections (`@@ name`), each followed by `@@ rc N`:
  now     the node's clock (uptimes are computed against it, not the operator's)
  api     Docker's Engine API over its unix socket, with curl: the cluster's labelled
          containers (`GET /containers/json`: name, state, docker's status text, labels,
          image, creation time) and `<image>:current` (`GET /images/.../json`: ID, tags,
          labels, hence the content tag). Neither answer holds `Config.Env` (secrets).
  docker  the same from the docker CLI (`docker ps`, then one `docker inspect` of both
          kinds), used when curl is missing or DOCKER_HOST / a docker context points
          elsewhere. `rc` non-zero in either: Docker itself is not usable.
  gpu     `nvidia-smi` (its table, parsed by facts.nvidia_smi)
  mem     the node's memory from /proc/meminfo (facts.meminfo: on a Spark, CPU and GPU
          share it, and nvidia-smi reports none)
  ray     head node only: the Ray dashboard's cluster status, asked on the head's own
          loopback, so the dashboard need not be exposed to the operator's network
  vllm    what `start`'s launcher leaves in the node's log folder (vLLM's pid and, once it
          ended, its exit status) and the server log's last line, so a model still loading
          is told apart from nothing running: the head's vLLM with Ray, every node's rank
          with the native executor
The API path exists for speed: each docker CLI run costs tens of milliseconds of CPU, and
on the testbed 16 nodes share two CPUs (status on 16 nodes: about 1 s of node scripts with
the CLI, 0.3 s with curl).
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from datetime import datetime, timezone

from dgxcluster.core.naming import LABEL_CLUSTER, MOVING_TAG, unit_name
from dgxcluster.core.nodepaths import (
    BOOT_PLAN,
    SUPERVISOR_STATE,
    VLLM_EXIT,
    VLLM_LOG,
    VLLM_PID,
)
from dgxcluster.facts import meminfo
from dgxcluster.remote.command import shell

# One `docker inspect` for the cluster's containers and the image's moving tag together:
# `index` reads fields either kind may lack (a container has no RepoTags, an image no State),
# and never `Config.Env`, which holds secrets.
_INSPECT = "\t".join([
    '{{json (index . "Id")}}',
    '{{json (index . "Name")}}',
    '{{json (index . "State")}}',
    '{{json (index . "RepoTags")}}',
    '{{with index . "Config"}}{{json (index . "Labels")}}{{else}}null{{end}}',
    '{{json (index . "Image")}}',
    '{{with index . "Config"}}{{json (index . "Image")}}{{else}}null{{end}}',
])

# $1 image ref (<image>:current)  $2 label filter  $3 inspect format
# $4 dashboard port ('' on nodes other than the head)  $5 the label filter as API JSON
# $6 dgxcluster's log folder on the node, may start with ~/ ('': no vllm section)
# $7 $8 $9 the names `start`'s vLLM launcher gives its pid, exit-status and log files
STATUS = r"""
printf '@@ now %s\n' "$(date +%s)"
sock=/var/run/docker.sock
case ${DOCKER_HOST:-} in unix://*) sock=${DOCKER_HOST#unix://} ;; "") ;; *) sock= ;; esac
[ -z "${DOCKER_CONTEXT:-}" ] || sock=
grep -qs '"currentContext"' "$HOME/.docker/config.json" && sock=
if [ -n "$sock" ] && command -v curl >/dev/null 2>&1; then
  echo '@@ api'
  echo "$sock"
  curl -sS --max-time 10 --unix-socket "$sock" -G http://docker/containers/json \
    --data-urlencode all=1 --data-urlencode "filters=$5" 2>&1
  rc=$?
  echo
  [ $rc -ne 0 ] || curl -sS --max-time 10 --unix-socket "$sock" "http://docker/images/$1/json" 2>&1
  printf '\n@@ rc %s\n' "$rc"
else
  echo '@@ docker'
  ids=$(docker ps -aq --no-trunc --filter "$2" 2>&1)
  rc=$?
  if [ $rc -ne 0 ]; then printf '%s\n' "$ids"
  else docker inspect --format "$3" "$1" $ids 2>&1; fi
  printf '\n@@ rc %s\n' "$rc"
fi
echo '@@ gpu'
timeout 10 nvidia-smi 2>&1
printf '\n@@ rc %s\n' "$?"
echo '@@ mem'
@MEMINFO@ 2>&1
printf '@@ rc %s\n' "$?"
if [ -n "$4" ]; then
  echo '@@ ray'
  u="http://127.0.0.1:$4/api/cluster_status?format=1"
  if command -v curl >/dev/null 2>&1; then curl -sS --max-time 5 "$u" 2>&1
  else python3 -c 'import sys,urllib.request as r;print(r.urlopen(sys.argv[1],timeout=5).read().decode())' \
    "$u" 2>&1
  fi
  printf '\n@@ rc %s\n' "$?"
fi
if [ -n "$6" ]; then
  L=$6
  case $L in "~") L=$HOME ;; "~/"*) L=$HOME/${L#"~/"} ;; esac
  echo '@@ vllm'
  [ ! -f "$L/$7" ] || echo "pid $(cat "$L/$7")"
  [ ! -f "$L/$8" ] || echo "exit $(cat "$L/$8")"
  [ ! -f "$L/$9" ] || echo "last $(tail -n 1 "$L/$9")"
  [ ! -f "$L/@SUPERVISOR@" ] || echo "supervisor $(head -c 4096 "$L/@SUPERVISOR@")"
  printf '@@ rc 0\n'
  echo '@@ persist'
  echo "enabled $(systemctl is-enabled "${10}" 2>/dev/null | tail -n 1)"
  [ ! -f "$L/../@BOOTPLAN@" ] || echo "plan $(grep -o '"config": *"[^"]*"' "$L/../@BOOTPLAN@" | head -n 1)"
  printf '@@ rc 0\n'
fi
"""
STATUS = STATUS.replace("@MEMINFO@", shlex.join(meminfo.ARGV)).replace(
    "@SUPERVISOR@", SUPERVISOR_STATE).replace("@BOOTPLAN@", BOOT_PLAN)


def status_argv(image: str, cluster: str, dashboard_port: int | None,
                log_dir: str = "") -> list[str]:
    """The node's script; the head's gets the dashboard port."""
    return shell(
        STATUS,
        f"{image}:{MOVING_TAG}",
        f"label={LABEL_CLUSTER}={cluster}",
        _INSPECT,
        str(dashboard_port) if dashboard_port else "",
        json.dumps({"label": [f"{LABEL_CLUSTER}={cluster}"]}),
        log_dir,
        VLLM_PID,
        VLLM_EXIT,
        VLLM_LOG,
        unit_name(cluster),
    )


def persist_of(probe: NodeProbe | None) -> tuple[str, str | None] | None:
    """(systemctl is-enabled's word, the boot plan's config hash) from the persist section."""
    sec = probe.section("persist") if probe else None
    if sec is None:
        return None
    enabled, made_for = "", None
    for line in sec.text.splitlines():
        if line.startswith("enabled"):
            enabled = line[len("enabled"):].strip()
        m = re.search(r'"config": *"([^"]*)"', line) if line.startswith("plan") else None
        if m:
            made_for = m.group(1)
    return enabled, made_for


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
    created: datetime | None = None
    status_text: str = ""  # docker's own words: "Up 3 minutes", "Exited (137) 2 hours ago"


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


@dataclass(frozen=True)
class Image:
    id: str
    tags: list[str]
    labels: dict[str, str]


def parse_docker(text: str) -> tuple[Image | None, list[Container]]:
    """The docker section: the moving tag's image (None if absent) and the containers."""
    image: Image | None = None
    containers: list[Container] = []
    for line in text.splitlines():
        parts = line.split("\t")
        if len(parts) != 7:
            continue  # e.g. "Error: No such object: <image>:current"
        try:
            oid, name, state, tags, labels, image_id, image_ref = (json.loads(p) for p in parts)
        except ValueError:
            continue
        labels = {str(k): str(v) for k, v in (labels or {}).items()}
        if isinstance(state, dict):
            containers.append(_container(name, state, labels, image_id, image_ref))
        elif isinstance(tags, list):
            image = Image(str(oid), [str(t) for t in tags], labels)
    return image, containers


_EXITED = re.compile(r"^Exited \((?P<code>-?\d+)\)")
_HEALTH = re.compile(r"\((?P<h>healthy|unhealthy|health: starting)\)")


def parse_api(text: str) -> tuple[Image | None, list[Container], str | None]:
    """The api section: the socket's path, then the containers' JSON, then the image's JSON
    (or docker's `{"message": ...}` when there is no such image); or what went wrong."""
    sock, _, rest = text.partition("\n")
    docs: list[object] = []
    decoder = json.JSONDecoder()
    pos = 0
    while len(docs) < 2:
        while pos < len(rest) and rest[pos].isspace():
            pos += 1
        if pos >= len(rest):
            break
        try:
            doc, pos = decoder.raw_decode(rest, pos)
        except ValueError:
            break
        docs.append(doc)
    listed = docs[0] if docs else None
    if not isinstance(listed, list):
        why = rest.strip().splitlines()[0] if rest.strip() else "no answer"
        if isinstance(listed, dict) and "message" in listed:
            why = str(listed["message"])
        return None, [], f"Cannot use the Docker daemon at unix://{sock}: {why}"
    containers = [_api_container(c) for c in listed if isinstance(c, dict)]
    image = None
    doc = docs[1] if len(docs) > 1 else None
    if isinstance(doc, dict) and "Id" in doc:
        cfg = doc.get("Config")
        labels = cfg.get("Labels") if isinstance(cfg, dict) else None
        tags = doc.get("RepoTags")
        image = Image(str(doc["Id"]), [str(t) for t in tags] if isinstance(tags, list) else [],
                      {str(k): str(v) for k, v in labels.items()} if isinstance(labels, dict) else {})
    return image, containers, None


def _api_container(c: dict[str, object]) -> Container:
    names = c.get("Names")
    name = str(names[0]) if isinstance(names, list) and names else str(c.get("Id", "?"))[:12]
    status = str(c.get("Status") or "")
    state = str(c.get("State") or "unknown")
    code = _EXITED.match(status)
    health = _HEALTH.search(status)
    labels = c.get("Labels")
    created = c.get("Created")
    return Container(
        name=name.lstrip("/"),
        state=state,
        running=state == "running",
        started_at=None,
        finished_at=None,
        exit_code=int(code.group("code")) if code else None,
        health=health.group("h").removeprefix("health: ") if health else None,
        labels={str(k): str(v) for k, v in labels.items()} if isinstance(labels, dict) else {},
        image_id=str(c.get("ImageID") or ""),
        image_ref=str(c.get("Image") or ""),
        created=datetime.fromtimestamp(created, timezone.utc) if isinstance(created, int) else None,
        status_text=status,
    )


def _container(name: object, state: dict[str, object], labels: dict[str, str],
               image_id: object, image_ref: object) -> Container:
    health = state.get("Health")
    code = state.get("ExitCode")
    return Container(
        name=str(name).lstrip("/"),
        state=str(state.get("Status", "unknown")),
        running=bool(state.get("Running")),
        started_at=parse_time(state.get("StartedAt")),
        finished_at=parse_time(state.get("FinishedAt")),
        exit_code=code if isinstance(code, int) else None,
        health=str(health.get("Status")) if isinstance(health, dict) else None,
        labels=labels,
        image_id=str(image_id or ""),
        image_ref=str(image_ref or ""),
    )


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
