"""The JSON record `build` leaves on each node (`NodePaths.image_record`): which content tag
`<image>:current` is, and how it got there. It survives `docker image prune` of untagged
layers and says who built what; for a pulled image also what was pulled (reference, repo
digest) and whether it has Ray, which `start` reads before it starts anything.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from typing import Any

from dgxcluster import __version__


@dataclass(frozen=True)
class ImageRecord:
    image: str
    content_tag: str
    image_id: str
    strategy: str  # each | distribute
    how: str  # built | received | tagged | pulled | found
    source: str  # node the image was built (or pulled) on
    at: str  # UTC, ISO 8601
    by: str = f"dgxcluster {__version__}"
    # image.source: pull only
    ref: str | None = None  # the reference pulled (image.ref)
    digest: str | None = None  # its repo digest on the source node (docker load keeps none)
    ray: str | None = None  # Ray's version in the image; "" none there; None not asked

    def to_json(self) -> bytes:
        return (json.dumps(asdict(self), indent=2, sort_keys=True) + "\n").encode()

    @classmethod
    def from_json(cls, data: bytes | str) -> ImageRecord | None:
        try:
            raw: Any = json.loads(data)
            image, tag, image_id, strategy, how, source, at, by = (
                str(raw[k]) for k in ("image", "content_tag", "image_id", "strategy", "how",
                                      "source", "at", "by"))
            ref, digest, ray = (None if raw.get(k) is None else str(raw[k])
                                for k in ("ref", "digest", "ray"))
            return cls(image, tag, image_id, strategy, how, source, at, by, ref=ref,
                       digest=digest, ray=ray)
        except (ValueError, KeyError, TypeError, AttributeError):
            return None


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
