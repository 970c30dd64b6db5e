"""Planning: what each node needs, from what each holds (probes in, actions out)."""

from __future__ import annotations

from pathlib import Path

import pytest

from dgxcluster.core.buildcontext import BuildContext, scan
from dgxcluster.core.naming import LABEL_CONTENT_TAG
from dgxcluster.errors import ConnectError
from dgxcluster.image.plan import Action, make_plan
from dgxcluster.image.probe import ImageInfo, Probe


@pytest.fixture
def ctx(tmp_path: Path) -> BuildContext:
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    return scan(tmp_path)


def holds(ctx: BuildContext, *, current_is_it: bool = True) -> Probe:
    img = ImageInfo("sha256:aaa", {LABEL_CONTENT_TAG: ctx.content_tag})
    old = ImageInfo("sha256:old", {LABEL_CONTENT_TAG: "ctx-000000000000"})
    return Probe(home="/h", want=img, current=img if current_is_it else old)


LACKS = Probe(home="/h", current=ImageInfo("sha256:old", {LABEL_CONTENT_TAG: "ctx-000000000000"}))
DOCKER_DOWN = Probe(home="/h", docker_error="Cannot connect to the Docker daemon")


def plan(ctx: BuildContext, strategy: str, probes: dict[str, Probe | BaseException],
         targets: tuple[str, ...] = ("n1", "n2", "n3"), builder: str = "n1",
         no_cache: bool = False):  # type: ignore[no-untyped-def]
    return make_plan(ctx, image="img", ref=f"img:{ctx.content_tag}", moving="img:current",
                     strategy=strategy, targets=targets, builder=builder, probes=probes,
                     no_cache=no_cache)


@pytest.mark.parametrize("strategy", ["each", "distribute"])
def test_everyone_holds_it_nothing_to_do(ctx: BuildContext, strategy: str) -> None:
    p = plan(ctx, strategy, {n: holds(ctx) for n in ("n1", "n2", "n3")})
    assert p.nothing_to_do
    assert all(n.action is Action.UP_TO_DATE for n in p.nodes.values())
    assert all(n.describe() == "up to date" for n in p.nodes.values())


def test_current_pointing_elsewhere_only_needs_a_tag(ctx: BuildContext) -> None:
    p = plan(ctx, "each", {"n1": holds(ctx), "n2": holds(ctx, current_is_it=False),
                           "n3": holds(ctx)})
    assert p.with_action(Action.RETAG) == ["n2"]
    assert not p.with_action(Action.BUILD)


def test_each_builds_where_missing(ctx: BuildContext) -> None:
    p = plan(ctx, "each", {"n1": holds(ctx), "n2": LACKS, "n3": LACKS})
    assert p.with_action(Action.BUILD) == ["n2", "n3"]
    sync_plan = p.nodes["n2"].sync
    assert sync_plan is not None and [f.path for f in sync_plan.send] == ["Dockerfile"]


def test_distribute_builds_once_on_the_build_node(ctx: BuildContext) -> None:
    p = plan(ctx, "distribute", {"n1": LACKS, "n2": LACKS, "n3": holds(ctx)}, builder="n1")
    # n3 already holds the image: it becomes the source and nothing is built at all
    assert p.source == "n3"
    assert p.with_action(Action.BUILD) == []
    assert p.with_action(Action.RECEIVE) == ["n1", "n2"]


def test_distribute_from_scratch(ctx: BuildContext) -> None:
    p = plan(ctx, "distribute", {"n1": LACKS, "n2": LACKS, "n3": LACKS}, builder="n2")
    assert p.source == "n2"
    assert p.with_action(Action.BUILD) == ["n2"]
    assert p.with_action(Action.RECEIVE) == ["n1", "n3"]
    assert p.nodes["n1"].source == "n2"


def test_build_node_outside_the_targets_still_builds(ctx: BuildContext) -> None:
    p = plan(ctx, "distribute", {"n1": LACKS, "n3": LACKS}, targets=("n3",), builder="n1")
    assert p.source == "n1"
    assert p.nodes["n1"].action is Action.BUILD
    assert p.nodes["n3"].action is Action.RECEIVE


def test_unusable_build_node_falls_back_and_says_so(ctx: BuildContext) -> None:
    p = plan(ctx, "distribute", {"n1": ConnectError("n1", "refused"), "n2": LACKS, "n3": LACKS})
    assert p.nodes["n1"].action is Action.UNREACHABLE
    assert p.source == "n2" and p.nodes["n2"].action is Action.BUILD
    assert p.notes and "n1" in p.notes[0]


def test_docker_down_is_a_failure_and_others_proceed(ctx: BuildContext) -> None:
    p = plan(ctx, "each", {"n1": LACKS, "n2": DOCKER_DOWN, "n3": LACKS})
    assert p.nodes["n2"].action is Action.FAILED
    assert "docker" in (p.nodes["n2"].error or "")
    assert p.with_action(Action.BUILD) == ["n1", "n3"]


def test_no_cache_rebuilds_even_where_present(ctx: BuildContext) -> None:
    p = plan(ctx, "distribute", {n: holds(ctx) for n in ("n1", "n2", "n3")}, no_cache=True)
    assert p.with_action(Action.BUILD) == ["n1"]
    assert p.with_action(Action.RECEIVE) == ["n2", "n3"]
    each = plan(ctx, "each", {n: holds(ctx) for n in ("n1", "n2", "n3")}, no_cache=True)
    assert each.with_action(Action.BUILD) == ["n1", "n2", "n3"]


def test_no_usable_node_fails_the_receivers(ctx: BuildContext) -> None:
    down = {n: ConnectError(n, "timed out") for n in ("n1", "n2")}
    p = plan(ctx, "distribute", {**down, "n3": DOCKER_DOWN})
    assert p.source is None
    assert {n.action for n in p.nodes.values()} <= {Action.UNREACHABLE, Action.FAILED}
