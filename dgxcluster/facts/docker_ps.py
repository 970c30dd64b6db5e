"""`docker ps -a --format '{{json .}}'`: containers on a node, with their labels."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field


def command(filters: Sequence[str] = ()) -> list[str]:
    """argv listing every container (running or not) matching `filters` (docker --filter args)."""
    return ["docker", "ps", "-a", "--no-trunc", *filters, "--format", "{{json .}}"]


@dataclass(frozen=True)
class ContainerInfo:
    id: str
    name: str
    image: str
    state: str  # created | running | exited | paused | restarting | removing | dead
    status: str  # "Up 2 minutes", "Exited (137) 5 seconds ago"
    labels: dict[str, str] = field(default_factory=dict)

    @property
    def running(self) -> bool:
        return self.state == "running"


@dataclass(frozen=True)
class DockerPs:
    containers: list[ContainerInfo] = field(default_factory=list)
    error: str | None = None


def parse_labels(text: str) -> dict[str, str]:
    """docker prints labels as `k=v,k=v` (our values never contain commas)."""
    out: dict[str, str] = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        if sep and key:
            out[key] = value
    return out


def parse(text: str) -> DockerPs:
    containers: list[ContainerInfo] = []
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            return DockerPs(error=f"could not parse `docker ps`: {line[:120]}")
        if not isinstance(row, dict):
            return DockerPs(error=f"could not parse `docker ps`: {line[:120]}")
        status = str(row.get("Status", ""))
        state = str(row.get("State") or _state_from_status(status))
        containers.append(ContainerInfo(
            id=str(row.get("ID", "")),
            name=str(row.get("Names", "")).split(",")[0],
            image=str(row.get("Image", "")),
            state=state,
            status=status,
            labels=parse_labels(str(row.get("Labels", ""))),
        ))
    return DockerPs(containers=containers)


def _state_from_status(status: str) -> str:
    """Older dockers lack `State` in the JSON; derive it from the human status."""
    s = status.lower()
    if s.startswith("up"):
        return "paused" if "paused" in s else "running"
    if s.startswith("exited"):
        return "exited"
    if s.startswith("created"):
        return "created"
    if s.startswith("restarting"):
        return "restarting"
    return s.split(" ", 1)[0] if s else "unknown"
