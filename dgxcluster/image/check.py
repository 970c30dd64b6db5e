"""Do the nodes hold the same image? The question `start` and `status` ask before they act.

`image_state` asks every node, in one round trip each, what `<image>:current` and the
wanted content tag are there; `compare` (pure) turns the answers into a verdict. Compare
content tags (the `dgxcluster.content-tag` label), not image IDs: `each` builds the same
inputs on every node, which gives equal content tags but different IDs (build timestamps).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from dgxcluster.core.naming import MOVING_TAG
from dgxcluster.core.session import Session
from dgxcluster.errors import ConnectError, DgxClusterError
from dgxcluster.image import probe

TIMEOUT_S = 60.0


@dataclass(frozen=True)
class NodeImage:
    """One node's answer. `error` is set (and the rest empty) when it could not be asked."""

    node: str
    wanted_tag: str | None = None  # the content tag asked about (ctx-<hex>), if any
    wanted_present: bool = False
    wanted_id: str | None = None
    current_tag: str | None = None  # content tag label of <image>:current
    current_id: str | None = None
    error: str | None = None
    unreachable: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True)
class Verdict:
    consistent: bool  # every node answered and `current` is the same content tag everywhere
    content_tag: str | None  # that tag, when consistent
    problems: dict[str, str] = field(default_factory=dict)  # node -> why it is not usable

    def explain(self) -> str:
        if self.consistent:
            return f"every node holds {self.content_tag}"
        return "; ".join(f"{n}: {why}" for n, why in sorted(self.problems.items()))


def expected_tag(session: Session) -> str | None:
    """The content tag the local build context gives now (None if the context is missing)."""
    from dgxcluster.image.context import scan

    inv = session.inventory
    try:
        return scan(inv.local_path(inv.image.context), inv.image.dockerfile,
                    inv.build_args).content_tag
    except DgxClusterError:
        return None


def image_state(session: Session, nodes: Sequence[str] | None = None, *,
                image: str | None = None, content_tag: str | None = None) -> dict[str, NodeImage]:
    """Per node: is `<image>:<content_tag>` there (and its ID), and which tag is `current`.

    `image` defaults to the inventory's `image.name`; `content_tag` to nothing (only
    `current` is examined); pass `expected_tag(session)` to ask about the local context.
    """
    name = image or session.inventory.image.name
    targets = session.cluster.select(nodes)
    want_ref = f"{name}:{content_tag}" if content_tag else f"{name}:{MOVING_TAG}"
    answers = session.cluster.run(
        probe.argv(want_ref, f"{name}:{MOVING_TAG}", session.inventory.state_dir), targets,
        timeout=TIMEOUT_S)
    out: dict[str, NodeImage] = {}
    for node in targets:
        if node in answers.errors:
            err = answers.errors[node]
            out[node] = NodeImage(node, content_tag, error=getattr(err, "reason", str(err)),
                                  unreachable=isinstance(err, ConnectError))
            continue
        res = answers.values[node]
        p = probe.parse(res.stdout, want_ref, f"{name}:{MOVING_TAG}")
        if not res.ok or p.docker_error:
            out[node] = NodeImage(node, content_tag,
                                  error=f"docker: {p.docker_error or res.stderr.strip()}")
            continue
        out[node] = NodeImage(
            node, content_tag,
            wanted_present=p.want is not None if content_tag else False,
            wanted_id=p.want.id if (content_tag and p.want) else None,
            current_tag=p.current.content_tag if p.current else None,
            current_id=p.current.id if p.current else None)
    return out


def compare(states: Mapping[str, NodeImage], expected: str | None = None) -> Verdict:
    """Pure: are all nodes on one content tag (and, if given, the expected one)?"""
    if not states:
        return Verdict(False, None, {})
    problems: dict[str, str] = {}
    tags: dict[str, str] = {}
    for node, s in states.items():
        if s.error:
            problems[node] = s.error
        elif s.current_tag is None:
            problems[node] = ("no image built by dgxcluster (run: dgxcluster build)"
                              if s.current_id is None else "`current` has no content-tag label")
        else:
            tags[node] = s.current_tag
    distinct = sorted(set(tags.values()))
    if len(distinct) > 1:
        for node, tag in tags.items():
            others = ", ".join(t for t in distinct if t != tag)
            problems[node] = f"holds {tag}, others hold {others} (run: dgxcluster build)"
    elif expected and distinct and distinct[0] != expected:
        for node in tags:
            problems[node] = (f"holds {distinct[0]}, the build context is now {expected} "
                              "(run: dgxcluster build)")
    if problems:
        return Verdict(False, None, problems)
    return Verdict(True, distinct[0] if distinct else None)
