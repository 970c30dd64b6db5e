"""Preflight: read every node's facts at once, then say everything that is wrong.

Read-only. Each node is checked in parallel: reachable, docker usable, the expected image
tag present, what dgxcluster containers exist, ports free on the head, a GPU visible.
The decision of what to do with existing containers is `start`'s (compare, then act).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from dgxcluster import naming
from dgxcluster.facts import listening, nvidia_smi
from dgxcluster.facts.docker_ps import ContainerInfo
from dgxcluster.nodepaths import NodePaths
from dgxcluster.remote.connection import Connection
from dgxcluster.serving import containers
from dgxcluster.serving.plan import HEAD, role_of

if TYPE_CHECKING:
    from dgxcluster.inventory.model import InventoryModel


@dataclass
class NodeFacts:
    node: str
    role: str
    paths: NodePaths
    containers: list[ContainerInfo] = field(default_factory=list)
    image_ok: bool = False
    busy_ports: set[int] = field(default_factory=set)
    gpus: list[nvidia_smi.Gpu] | None = None
    problems: list[str] = field(default_factory=list)

    def container(self, name: str) -> ContainerInfo | None:
        return next((c for c in self.containers if c.name == name), None)


def ports_to_check(inv: InventoryModel) -> list[int]:
    return [inv.ray.port, inv.ray.dashboard_port, inv.serve.port]


def gather(conn: Connection, inv: InventoryModel, image: str) -> NodeFacts:
    """One node's facts; problems are collected, not raised, so all of them are reported."""
    paths = NodePaths.resolve(conn, inv.state_dir, inv.cluster)
    role = role_of(inv, conn.node)
    facts = NodeFacts(conn.node, role, paths)
    facts.containers = containers.list_cluster(conn, inv.cluster)
    facts.image_ok = containers.image_present(conn, image)
    if not facts.image_ok:
        facts.problems.append(f"image {image} is not on this node: run `dgxcluster build`")
    if role == HEAD:
        res = conn.run(listening.COMMAND, timeout=containers.QUICK_S)
        parsed = listening.parse(res.stdout)
        if not res.ok or parsed.error:
            facts.problems.append(parsed.error or f"`ss -Hltn` failed: {res.stderr.strip()}")
        facts.busy_ports = parsed.ports & set(ports_to_check(inv))
    if inv.container.gpus != "none":
        res = conn.run(nvidia_smi.COMMAND, timeout=containers.QUICK_S)
        smi = nvidia_smi.parse(res.stdout)
        if not res.ok:
            why = (res.stderr or res.stdout).strip().splitlines()
            facts.problems.append("nvidia-smi failed: " + (why[0] if why else f"exit {res.exit_code}")
                                  + " (is the NVIDIA driver installed?)")
        elif smi.error:
            facts.problems.append(smi.error)
        elif not smi.gpus:
            facts.problems.append("nvidia-smi lists no GPU")
        facts.gpus = smi.gpus
    return facts


def describe(facts: NodeFacts, inv: InventoryModel) -> str:
    """One line for the outcome table."""
    bits = ["image ok" if facts.image_ok else "image missing"]
    if facts.role == HEAD:
        ports = ",".join(map(str, ports_to_check(inv)))
        mine = facts.container(naming.container_name(inv.cluster, HEAD))
        if not facts.busy_ports:
            bits.append(f"ports {ports} free")
        elif mine is not None and mine.running:
            bits.append(f"ports {ports} held by {mine.name}")
        else:
            bits.append(f"ports busy: {','.join(map(str, sorted(facts.busy_ports)))}")
    if facts.gpus is None:
        bits.append("GPU check off (container.gpus: none)")
    else:
        bits.append(f"GPU: {', '.join(g.name for g in facts.gpus) or 'none'}")
    names = [f"{c.name} ({c.state})" for c in facts.containers]
    if names:
        bits.append("found " + ", ".join(names))
    return "; ".join(bits)


def foreign_containers(facts: NodeFacts, inv: InventoryModel) -> list[ContainerInfo]:
    """This cluster's containers that are not the one this node should run (e.g. the head moved)."""
    expected = naming.container_name(inv.cluster, facts.role)
    return [c for c in facts.containers if c.name != expected]
