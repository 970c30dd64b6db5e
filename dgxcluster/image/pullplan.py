"""What each node needs for a pulled image (pure: probes in, actions out).

The compare half of "compare, then act" for `image.source: pull`. One node is the source:
the build node (default: the head) if it answers, else a node that already holds the image,
else any target. The source pulls only when it holds neither the pulled name nor
dgxcluster's tag for it (or `--no-cache` asks the registry again); the others then receive
the source's bytes, unless they already hold that image ID (then they only get the tags).
Until the source's image ID is known (before its pull) the others are planned to receive.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from dgxcluster.errors import ConnectError
from dgxcluster.image.pullprobe import PullProbe


class Act(str, enum.Enum):
    UP_TO_DATE = "up to date"
    PULL = "pull"  # the source: docker pull from the registry
    FOUND = "found"  # the source: the image is here already; give it dgxcluster's tags
    RECEIVE = "receive"
    TAG = "tag"  # the source's image ID is here: only the tags are missing
    UNREACHABLE = "unreachable"
    FAILED = "failed"


STEP_NAMES = {Act.UP_TO_DATE: "check", Act.UNREACHABLE: "check", Act.FAILED: "check",
              Act.PULL: "pull", Act.FOUND: "tag", Act.RECEIVE: "receive", Act.TAG: "tag"}


@dataclass
class PullNode:
    node: str
    act: Act
    probe: PullProbe | None = None
    error: str | None = None


@dataclass
class PullPlan:
    ref: str  # image.ref, as written
    want: str  # <name>:pull-<hex>
    moving: str  # <name>:current
    content_tag: str
    taggable: str | None  # the pulled name a node can carry as a tag (None: digest only)
    nodes: dict[str, PullNode]
    source: str | None = None
    source_id: str | None = None  # known once the source holds the image
    notes: list[str] = field(default_factory=list)

    def with_act(self, *acts: Act) -> list[str]:
        return [n for n, p in self.nodes.items() if p.act in acts]

    def describe(self, node: str) -> str:
        p = self.nodes[node]
        short = (self.source_id or "").removeprefix("sha256:")[:12]
        return {
            Act.UP_TO_DATE: "up to date",
            Act.PULL: f"pull {self.ref} here",
            Act.FOUND: f"tag the {self.ref} found here (image {short}) as {self.want}",
            Act.RECEIVE: f"receive the image from {self.source}"
                         + ("" if self.source_id else " (unless the pull brings what it holds)"),
            Act.TAG: f"image {short} is here: tag it",
        }.get(p.act, p.error or p.act.value)


def _usable(probe: PullProbe | BaseException | None) -> PullProbe | None:
    return probe if isinstance(probe, PullProbe) and probe.docker_error is None else None


def _failed(node: str, probe: PullProbe | BaseException | None) -> PullNode:
    if isinstance(probe, ConnectError):
        return PullNode(node, Act.UNREACHABLE, error=probe.reason)
    if isinstance(probe, PullProbe):
        return PullNode(node, Act.FAILED, probe, error=f"docker: {probe.docker_error}")
    return PullNode(node, Act.FAILED, error=str(probe) if probe else "no answer")


def held_id(p: PullProbe) -> str | None:
    """The image this node would send: what the pulled name is here, else dgxcluster's tag."""
    return p.ref.id or p.want.id


def make_plan(*, ref: str, want: str, moving: str, content_tag: str, taggable: str | None,
              targets: Sequence[str], builder: str,
              probes: Mapping[str, PullProbe | BaseException], refresh: bool = False) -> PullPlan:
    """Every target gets a PullNode; the source may be a node that is not a target."""
    plan = PullPlan(ref, want, moving, content_tag, taggable, {})
    for node in targets:
        p = _usable(probes.get(node))
        plan.nodes[node] = _failed(node, probes.get(node)) if p is None else \
            PullNode(node, Act.RECEIVE, p)
    order = [builder, *[t for t in targets if t != builder]]
    usable = [n for n in order if _usable(probes.get(n)) is not None]
    holding = [n for n in usable if held_id(_probe(probes, n)) is not None]
    source = (holding[0] if holding and not refresh else None) or (usable[0] if usable else None)
    if source is None:
        for n in plan.nodes.values():
            if n.act is Act.RECEIVE:
                n.act, n.error = Act.FAILED, "no node can pull the image (all unreachable)"
        return plan
    plan.source = source
    if source != builder:
        plan.notes.append(f"build node {builder} is not usable; using {source}"
                          if _usable(probes.get(builder)) is None else
                          f"{source} already holds {ref}; sending it from there")
    sp = _probe(probes, source)
    plan.source_id = None if refresh else held_id(sp)
    if plan.source_id is None:
        plan.nodes[source] = PullNode(source, Act.PULL, sp)
    else:
        up = sp.up_to_date(plan.source_id, taggable is not None)
        plan.nodes[source] = PullNode(source, Act.UP_TO_DATE if up else Act.FOUND, sp)
        settle(plan, plan.source_id)
    return plan


def _probe(probes: Mapping[str, PullProbe | BaseException], node: str) -> PullProbe:
    p = _usable(probes.get(node))
    assert p is not None
    return p


def settle(plan: PullPlan, source_id: str) -> None:
    """Once the source's image ID is known: who is up to date, who only needs the tags."""
    plan.source_id = source_id
    for node, p in plan.nodes.items():
        if node == plan.source or p.act is not Act.RECEIVE or p.probe is None:
            continue
        if p.probe.up_to_date(source_id, plan.taggable is not None):
            p.act = Act.UP_TO_DATE
        elif p.probe.holds(source_id):
            p.act = Act.TAG
