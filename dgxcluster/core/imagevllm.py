"""Which vLLM release the inventory's image runs, known before any node is touched.

The image is built from the local build context, and its Dockerfile names the base's vLLM in
`ARG VLLM_VERSION` (the build checks that the base really has that release and records it as
the label `dgxcluster.vllm-version`: images/vllm-gb10/Dockerfile, images/testbed/Dockerfile).
`image.build_args.VLLM_VERSION` overrides the Dockerfile's default, as for `docker build`;
for a pulled image (`image.source: pull`) it is the only answer.
Both are part of the image's content tag, so the image a node runs cannot disagree with this
answer without `start` refusing it as the wrong image anyway.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from dgxcluster.inventory.load import Inventory
from dgxcluster.inventory.schema import InventoryModel

VLLM_VERSION_ARG = "VLLM_VERSION"


@dataclass(frozen=True)
class ImageVllm:
    """The image's vLLM release (None when nothing says) and where that was read."""

    version: str | None
    where: str


def dockerfile_arg(text: str, name: str) -> str | None:
    """The value `ARG name[=default]` gives in a Dockerfile's final stage (where the image's
    labels are set): its default there, or, for a bare `ARG name`, the default declared before
    the first FROM (Docker's scoping rules); None when there is none or it is built from other
    variables."""
    globals_: dict[str, str | None] = {}
    stage: dict[str, str | None] | None = None
    logical = text.replace("\\\r\n", " ").replace("\\\n", " ")
    for line in logical.splitlines():
        words = line.strip().split(None, 1)
        if not words:
            continue
        if words[0].upper() == "FROM":
            stage = {}
            continue
        if len(words) < 2 or words[0].upper() != "ARG":
            continue
        try:
            items = shlex.split(words[1], comments=True)
        except ValueError:
            continue
        for item in items:
            key, eq, value = item.partition("=")
            if stage is None:
                globals_[key] = value if eq else None
            else:
                stage[key] = value if eq else globals_.get(key)
    scope = stage if stage is not None and name in stage else globals_
    found = scope.get(name)
    return found if found and "$" not in found else None


def image_vllm(inv: InventoryModel) -> ImageVllm:
    """`image.build_args.VLLM_VERSION`, else the Dockerfile's `ARG VLLM_VERSION` default (the
    build context is relative to the inventory file, as for `build`)."""
    arg = inv.image.build_args.get(VLLM_VERSION_ARG)
    if arg:
        return ImageVllm(arg, f"image.build_args.{VLLM_VERSION_ARG}")
    if inv.image.source == "pull":  # no Dockerfile of ours says what a pulled image holds
        return ImageVllm(None, f"image.source is pull: nothing here says which vLLM "
                               f"{inv.image.ref} has")
    context = inv.local_path(inv.image.context) if isinstance(inv, Inventory) else inv.image.context
    path = context / inv.image.dockerfile
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        return ImageVllm(None, f"{path} could not be read ({exc.strerror or exc})")
    version = dockerfile_arg(text, VLLM_VERSION_ARG)
    if version is None:
        return ImageVllm(None, f"{path} has no `ARG {VLLM_VERSION_ARG}=<release>`")
    return ImageVllm(version, f"{path} (ARG {VLLM_VERSION_ARG})")
