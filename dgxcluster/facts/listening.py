"""`ss -Hltn`: the TCP ports something listens on, in the node's network namespace."""

from __future__ import annotations

from dataclasses import dataclass, field

COMMAND = ["ss", "-Hltn"]


@dataclass(frozen=True)
class Listening:
    ports: set[int] = field(default_factory=set)
    error: str | None = None


def parse(text: str) -> Listening:
    ports: set[int] = set()
    for line in text.splitlines():
        cols = line.split()
        if len(cols) < 4:
            continue
        if cols[0] != "LISTEN":
            return Listening(error=f"could not parse `ss -Hltn`: {line.strip()[:120]}")
        _, _, port = cols[3].rpartition(":")
        if port.isdigit():
            ports.add(int(port))
    return Listening(ports=ports)
