"""Do the nodes hold the same image? Asked with the build's own probe script.

`image_state` asks every node, in one round trip each, what `<image>:current` and the
wanted content tag are there; `core.imageid.compare` (pure) turns the answers into a
verdict, and `core.imageid.expected` says which content tag is wanted.
"""

from __future__ import annotations

from collections.abc import Sequence

from dgxcluster.core.imageid import NodeImage
from dgxcluster.core.naming import MOVING_TAG
from dgxcluster.core.session import Session
from dgxcluster.errors import ConnectError
from dgxcluster.image import probe

TIMEOUT_S = 60.0


def image_state(session: Session, nodes: Sequence[str] | None = None, *,
                image: str | None = None, content_tag: str | None = None) -> dict[str, NodeImage]:
    """Per node: is `<image>:<content_tag>` there (and its ID), and which tag is `current`.

    `image` defaults to the inventory's `image.name`; `content_tag` to nothing (only
    `current` is examined); pass `core.imageid.expected(inv).content_tag` to ask about the local context.
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

