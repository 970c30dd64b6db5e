"""Preflight: read every node's facts at once, then say everything that is wrong.

Read-only. Each node is checked in parallel: reachable, docker usable, the expected image
tag present, what dgxcluster containers exist, ports free on the head, a GPU visible, and
whether this cluster's boot unit is installed (`serving.persist`).
The decision of what to do with existing containers is `start`'s (compare, then act).
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from dgxcluster.core import docker, naming
from dgxcluster.core.docker import first_line
from dgxcluster.core.nodepaths import NodePaths
from dgxcluster.errors import StepError
from dgxcluster.facts import docker_ps, listening, nvidia_smi
from dgxcluster.facts.docker_ps import ContainerInfo
from dgxcluster.remote.command import shell
from dgxcluster.remote.connection import Connection
from dgxcluster.serving.plan import node_ports, role_of

if TYPE_CHECKING:
    from dgxcluster.inventory.schema import InventoryModel


class NodeCheck(Protocol):
    """A check another capability adds to `start`'s preflight (the model check: `models`).

    The CLI hands it in (`StartOptions.model_check`), so serving never imports that
    capability: each node is read in the preflight fan-out, then all are judged together.
    """

    @property
    def label(self) -> str:
        """What is looked for, for the live status ("Qwen/Qwen3-8B")."""

    @property
    def skip_reason(self) -> str:
        """Why nothing is checked (then read/judge are not called); "" to check."""

    def read(self, conn: Connection, paths: NodePaths) -> object:
        """One node's answer (errors are answers too: returned, not raised)."""

    def judge(self, answers: Mapping[str, object]) -> dict[str, tuple[bool, str]]:
        """Per node: (fine?, what was found or what is wrong and the fix)."""


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
    model: str = ""  # what the model check found here, for the outcome table
    unit: bool = False  # a boot unit of this cluster is installed (serve.persist)

    def container(self, name: str) -> ContainerInfo | None:
        return next((c for c in self.containers if c.name == name), None)


def ports_to_check(inv: InventoryModel, node: str) -> list[int]:
    """What a new container of `node` binds (the head's ports, a replica leader's: plan.node_ports)."""
    return list(node_ports(inv, node))


# One round trip per node: every fact, each section opened by "@@<name>" and closed by
# "@@rc <exit status>". Values arrive as $1.., never spliced into the script.
_GATHER = (
    'printf "@@home\\n%s\\n@@rc 0\\n" "$HOME"; '
    'echo @@ps; docker ps -a --no-trunc --filter "label=$1" --format "{{json .}}" 2>&1; echo "@@rc $?"; '
    'echo @@image; docker image inspect --format "{{.Id}}" "$2" 2>&1; echo "@@rc $?"; '
    'if [ "$3" = 1 ]; then echo @@ss; ' + shlex.join(listening.COMMAND) + ' 2>&1; echo "@@rc $?"; fi; '
    'if [ "$4" = 1 ]; then echo @@smi; ' + shlex.join(nvidia_smi.ARGV) + ' 2>&1; echo "@@rc $?"; fi; '
    'echo @@unit; [ ! -e "$5" ] || echo present; echo "@@rc 0"'
)


def split_sections(text: str) -> dict[str, tuple[str, int]]:
    """`@@name` ... `@@rc N` blocks -> {name: (text, N)}; a missing rc reads as -1."""
    out: dict[str, tuple[str, int]] = {}
    name: str | None = None
    body: list[str] = []
    for line in text.splitlines():
        if line.startswith("@@rc ") and name is not None:
            code = line[5:].strip()
            out[name] = ("\n".join(body), int(code) if code.lstrip("-").isdigit() else -1)
            name, body = None, []
        elif line.startswith("@@") and " " not in line:
            name, body = line[2:], []
        elif name is not None:
            body.append(line)
    if name is not None:
        out[name] = ("\n".join(body), -1)
    return out


def gather(conn: Connection, inv: InventoryModel, image: str) -> NodeFacts:
    """One node's facts; problems are collected, not raised, so all of them are reported."""
    role = role_of(inv, conn.node)
    check_gpu = inv.container.gpus != "none"
    ports = ports_to_check(inv, conn.node)
    res = conn.run(shell(_GATHER, f"{naming.LABEL_CLUSTER}={inv.cluster}", image,
                         "1" if ports else "0", "1" if check_gpu else "0",
                         naming.unit_path(inv.cluster)),
                   timeout=docker.QUICK_S)
    sec = split_sections(res.stdout)
    home = sec.get("home", ("", -1))[0].strip()
    if not home.startswith("/"):
        raise StepError("preflight", f"could not read $HOME (got {home!r}): {res.stderr.strip()}",
                        conn.node)
    facts = NodeFacts(conn.node, role, NodePaths(home, inv.state_dir, inv.cluster))
    ps_text, ps_rc = sec.get("ps", ("", -1))
    ps = docker_ps.parse(ps_text) if ps_rc == 0 else None
    if ps is None or ps.error:
        why = ps.error if ps else first_line(ps_text)
        facts.problems.append(f"docker is not usable: {why}")
    else:
        facts.containers = ps.containers
    facts.image_ok = sec.get("image", ("", -1))[1] == 0
    facts.unit = sec.get("unit", ("", -1))[0].strip() == "present"
    if not facts.image_ok and ps is not None:
        facts.problems.append(f"image {image} is not on this node: run `dgxcluster build`")
    if ports:
        ss_text, ss_rc = sec.get("ss", ("", -1))
        parsed = listening.parse(ss_text)
        if ss_rc != 0 or parsed.error:
            facts.problems.append(parsed.error or f"`ss -Hltn` failed: {first_line(ss_text)}")
        facts.busy_ports = parsed.ports & set(ports)
    if check_gpu:
        smi_text, smi_rc = sec.get("smi", ("", -1))
        smi = nvidia_smi.read(smi_text)
        if smi_rc != 0:
            facts.problems.append(f"nvidia-smi failed: {first_line(smi_text)} "
                                  "(is the NVIDIA driver installed?)")
        elif smi.error:
            facts.problems.append(smi.error)
        elif not smi.gpus:
            facts.problems.append("nvidia-smi lists no GPU")
        facts.gpus = smi.gpus
    return facts


def describe(facts: NodeFacts, inv: InventoryModel) -> str:
    """One line for the outcome table."""
    bits = ["image ok" if facts.image_ok else "image missing"]
    checked = ports_to_check(inv, facts.node)
    if checked:
        ports = ",".join(map(str, checked))
        mine = facts.container(naming.container_name(inv.cluster, facts.role))
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
    if facts.model:
        bits.append(facts.model)
    names = [f"{c.name} ({c.state})" for c in facts.containers]
    if names:
        bits.append("found " + ", ".join(names))
    return "; ".join(bits)


def foreign_containers(facts: NodeFacts, inv: InventoryModel) -> list[ContainerInfo]:
    """This cluster's containers that are not the one this node should run (e.g. the head moved)."""
    expected = naming.container_name(inv.cluster, facts.role)
    return [c for c in facts.containers if c.name != expected]
