"""The JSON record `build` leaves on each node (`NodePaths.image_record`): which content tag
`<image>:current` is, and how it got there. It survives `docker image prune` of untagged
layers and says who built what.
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
    how: str  # built | received | tagged
    source: str  # node the image was built on
    at: str  # UTC, ISO 8601
    by: str = f"dgxcluster {__version__}"

    def to_json(self) -> bytes:
        return (json.dumps(asdict(self), indent=2, sort_keys=True) + "\n").encode()

    @classmethod
    def from_json(cls, data: bytes | str) -> ImageRecord | None:
        try:
            raw: Any = json.loads(data)
            return cls(**{k: str(raw[k]) for k in ("image", "content_tag", "image_id", "strategy",
                                                   "how", "source", "at", "by")})
        except (ValueError, KeyError, TypeError):
            return None


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
