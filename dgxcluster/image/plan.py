"""Decide, from what every node holds, what each one needs (pure: probes in, actions out).

This is the compare half of "compare, then act": `--dry-run` prints this plan and stops;
a real build executes it. A node that already holds the content tag needs nothing (or only
the moving tag `current` pointed back at it); the rest build (`each`) or receive the image
from one source node (`distribute`), which is the configured build node, or any node that
already holds the tag, so nothing is built twice.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from dgxcluster.core.buildcontext import BuildContext
from dgxcluster.errors import ConnectError
from dgxcluster.image import sync
from dgxcluster.image.probe import Probe


class Action(str, enum.Enum):
    UP_TO_DATE = "up to date"
    RETAG = "tag current"  # the content tag is there; `current` points elsewhere
    BUILD = "build"
    RECEIVE = "receive"
    UNREACHABLE = "unreachable"
    FAILED = "failed"


@dataclass
class NodePlan:
    node: str
    action: Action
    probe: Probe | None = None
    sync: sync.SyncPlan | None = None
    source: str | None = None  # RECEIVE: from which node
    error: str | None = None

    def describe(self) -> str:
        if self.action is Action.UP_TO_DATE:
            return "up to date"
        if self.action is Action.RETAG:
            return "image present; point `current` at it"
        if self.action is Action.BUILD:
            return f"build here ({self.sync.describe()})" if self.sync else "build here"
        if self.action is Action.RECEIVE:
            return f"receive the image from {self.source}"
        return self.error or self.action.value


@dataclass
class BuildPlan:
    image: str
    ref: str
    moving: str
    content_tag: str
    strategy: str
    nodes: dict[str, NodePlan]
    source: str | None = None  # distribute: the node the others receive from
    notes: list[str] = field(default_factory=list)

    def with_action(self, *actions: Action) -> list[str]:
        return [n for n, p in self.nodes.items() if p.action in actions]

    @property
    def nothing_to_do(self) -> bool:
        return not self.with_action(Action.BUILD, Action.RECEIVE, Action.RETAG)


def _usable(outcome: Probe | BaseException | None) -> Probe | None:
    if isinstance(outcome, Probe) and outcome.docker_error is None:
        return outcome
    return None


def _failed(node: str, outcome: Probe | BaseException | None) -> NodePlan:
    if isinstance(outcome, ConnectError):
        return NodePlan(node, Action.UNREACHABLE, error=outcome.reason)
    if isinstance(outcome, Probe):
        return NodePlan(node, Action.FAILED, probe=outcome, error=f"docker: {outcome.docker_error}")
    return NodePlan(node, Action.FAILED, error=str(outcome) if outcome else "no answer")


def _present(node: str, p: Probe) -> NodePlan:
    return NodePlan(node, Action.UP_TO_DATE if p.current_is_want else Action.RETAG, probe=p)


def _build(node: str, p: Probe, ctx: BuildContext) -> NodePlan:
    return NodePlan(node, Action.BUILD, probe=p, sync=sync.plan(ctx, p.files, p.manifest))


def make_plan(
    ctx: BuildContext,
    *,
    image: str,
    ref: str,
    moving: str,
    strategy: str,
    targets: Sequence[str],
    builder: str,
    probes: Mapping[str, Probe | BaseException],
    no_cache: bool = False,
) -> BuildPlan:
    """Every target gets a NodePlan; with `distribute` the source may be a non-target node."""
    out = BuildPlan(image, ref, moving, ctx.content_tag, strategy, {})
    for node in targets:
        p = _usable(probes.get(node))
        if p is None:
            out.nodes[node] = _failed(node, probes.get(node))
        elif p.has_want and not no_cache:
            out.nodes[node] = _present(node, p)
        elif strategy == "each":
            out.nodes[node] = _build(node, p, ctx)
        else:
            out.nodes[node] = NodePlan(node, Action.RECEIVE, probe=p)
    if strategy == "distribute":
        _add_source(out, ctx, builder, targets, probes, no_cache)
    return out


def _add_source(out: BuildPlan, ctx: BuildContext, builder: str, targets: Sequence[str],
                probes: Mapping[str, Probe | BaseException], no_cache: bool) -> None:
    """distribute: the one node the receivers get the image from (built there if need be)."""
    needing = out.with_action(Action.RECEIVE)
    if not needing:
        return
    source = _pick_source(out, builder, targets, probes, no_cache)
    if source is None:
        for node in needing:
            out.nodes[node].action = Action.FAILED
            out.nodes[node].error = "no node can build the image (build node unreachable)"
        return
    out.source = source
    sp = _usable(probes.get(source))
    assert sp is not None
    if no_cache or not sp.has_want:
        out.nodes[source] = _build(source, sp, ctx)
        if source != builder:
            out.notes.append(f"build node {builder} is not usable; building on {source} instead")
    elif source not in out.nodes:
        out.nodes[source] = _present(source, sp)
    for node in needing:
        if node != source:
            out.nodes[node].source = source


def _pick_source(plan: BuildPlan, builder: str, targets: Sequence[str],
                 probes: Mapping[str, Probe | BaseException], no_cache: bool) -> str | None:
    """The build node if it is usable; else a node that already has the image; else a target."""
    order = [builder, *[t for t in targets if t != builder]]
    if not no_cache:
        for node in order:
            p = _usable(probes.get(node))
            if p is not None and p.has_want:
                return node
    for node in order:
        if _usable(probes.get(node)) is not None:
            return node
    return None
