"""The JSON record `build` leaves on each node: which content tag `<image>:current` is, and how
it got there. `status` and `start` read it (with the image's own label) to refuse nodes whose
images differ; it survives `docker image prune` of untagged layers and says who built what.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import PurePosixPath
from typing import Any

from dgxcluster import __version__
from dgxcluster.core.nodepaths import NodePaths


def slug(image: str) -> str:
    """`dgxcluster/vllm-gb10` -> `dgxcluster_vllm-gb10` (one directory or file per image)."""
    return image.replace("/", "_")


def record_path(paths: NodePaths, image: str) -> str:
    return str(PurePosixPath(paths.records_dir) / f"image-{slug(image)}.json")


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
