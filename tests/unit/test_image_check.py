"""`image_state` + `core.imageid.compare`: what `status` (and `build`) use to spot mismatched images."""

from __future__ import annotations

import re

from dgxcluster.core.imageid import NodeImage, compare
from dgxcluster.core.session import Session
from dgxcluster.image.check import image_state
from dgxcluster.inventory import parse_inventory
from tests.fakes import FakeConnection, Reply

INV = ("cluster: c\nnodes:\n"
       "  - {name: n1, host: 10.0.0.1, fabric_ip: 192.0.2.1}\n"
       "  - {name: n2, host: 10.0.0.2, fabric_ip: 192.0.2.2}\n"
       "  - {name: n3, host: 10.0.0.3, fabric_ip: 192.0.2.3}\n"
       "image: {name: t/img}\n")
A, B = "ctx-aaaaaaaaaaaa", "ctx-bbbbbbbbbbbb"


def ni(node: str, tag: str | None, **kw: object) -> NodeImage:
    return NodeImage(node, current_tag=tag, current_id="sha256:1" if tag else None, **kw)  # type: ignore[arg-type]


def test_same_tag_everywhere_is_consistent() -> None:
    v = compare({n: ni(n, A) for n in ("n1", "n2")})
    assert v.consistent and v.content_tag == A and v.explain() == f"every node holds {A}"


def test_different_tags_name_every_node() -> None:
    v = compare({"n1": ni("n1", A), "n2": ni("n2", B)})
    assert not v.consistent
    assert B in v.problems["n1"] and A in v.problems["n2"]


def test_missing_image_and_unreachable_are_problems() -> None:
    v = compare({"n1": ni("n1", A), "n2": ni("n2", None),
                 "n3": NodeImage("n3", error="timed out", unreachable=True)})
    assert not v.consistent
    assert "dgxcluster build" in v.problems["n2"] and v.problems["n3"] == "timed out"


def test_stale_against_the_build_context() -> None:
    v = compare({n: ni(n, A) for n in ("n1", "n2")}, expected=B)
    assert not v.consistent and B in v.problems["n1"]


def _probe(tag: str) -> Reply:
    img = f"sha256:{tag[-1] * 64}\t{{\"dgxcluster.content-tag\":\"{tag}\"}}"
    return Reply(stdout=f"home\t/h\ninspect\t{img}\ninspect\t{img}\ninspect-exit\t0\n")


def test_image_state_asks_each_node_once() -> None:
    fakes = {"n1": FakeConnection("n1").on(re.escape("ref=$1"), _probe(A)),
             "n2": FakeConnection("n2").on(re.escape("ref=$1"), _probe(B)),
             "n3": FakeConnection("n3", unreachable="connection refused")}
    inv = parse_inventory(INV, environ={})
    with Session.open(inv, factory=lambda spec: fakes[spec.name], environ={}) as s:
        states = image_state(s, content_tag=A)
    assert states["n1"].wanted_present and states["n1"].current_tag == A
    assert states["n2"].current_tag == B and states["n2"].wanted_present  # fake answers any ref
    assert states["n3"].unreachable and states["n3"].error == "connection refused"
    assert fakes["n1"].calls[0][-5:-3] == [f"t/img:{A}", "t/img:current"]
    assert len(fakes["n1"].calls) == 1
    assert not compare(states).consistent
