"""`start`'s preflight check of a pulled image (`image.source: pull`), handed to serving by
the CLI (capabilities do not import each other; `serving.preflight.NodeCheck`).

Every node must hold the same image ID under `<name>:pull-<hex>` (a moved upstream tag
pulled twice would not), and the image must have Ray when the containers run Ray: NGC's
vLLM containers do not. `build` asked the image for `ray --version` once and wrote the
answer into each node's record; this reads the record (one `cat`, no container started),
trusting it only for the image ID it names.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from dgxcluster.core import docker, imageid
from dgxcluster.core.nodepaths import NodePaths
from dgxcluster.image.records import ImageRecord
from dgxcluster.remote.command import shell
from dgxcluster.remote.connection import Connection

if TYPE_CHECKING:
    from dgxcluster.inventory.schema import InventoryModel

_READ = r"""docker image inspect --format '{{.Id}}' "$1" 2>/dev/null || echo absent
cat "$2" 2>/dev/null | tr -d '\n'; echo
"""


@dataclass(frozen=True)
class _Answer:
    image_id: str | None
    record: ImageRecord | None
    error: str | None = None


def needs_ray(inv: InventoryModel) -> bool:
    """Do the containers run Ray? Only with `serve.executor: ray`; native runs `vllm serve`
    in every container, no Ray (NGC's vLLM image serves as it is)."""
    return inv.serve.executor == "ray"


@dataclass(frozen=True)
class PulledImageCheck:
    ref: str  # <name>:pull-<hex>, what start runs
    pulled: str  # image.ref
    image: str  # image.name (its record's name)
    ray_needed: bool

    @property
    def label(self) -> str:
        return f"the image pulled from {self.pulled}"

    @property
    def skip_reason(self) -> str:
        return ""

    def read(self, conn: Connection, paths: NodePaths) -> object:
        res = conn.run(shell(_READ, self.ref, paths.image_record(self.image)),
                       timeout=docker.QUICK_S)
        lines = res.stdout.splitlines()
        if not lines or not res.ok:
            return _Answer(None, None, f"could not read the image: {res.stderr.strip()}")
        image_id = lines[0].strip() if lines[0].startswith("sha256:") else None
        return _Answer(image_id, ImageRecord.from_json(lines[1]) if len(lines) > 1 else None)

    def judge(self, answers: Mapping[str, object]) -> dict[str, tuple[bool, str]]:
        got = {n: a for n, a in answers.items() if isinstance(a, _Answer)}
        out: dict[str, tuple[bool, str]] = {n: (True, "") for n in answers}
        states = {n: imageid.NodeImage(n, current_tag=self.ref.rsplit(":", 1)[1],
                                       current_id=a.image_id)
                  for n, a in got.items() if a.image_id and a.error is None}
        verdict = imageid.compare(states)
        for node, why in verdict.problems.items():
            out[node] = (False, f"{self.ref}: {why}")
        for node, a in got.items():
            if a.error:
                out[node] = (False, a.error)
            elif self.ray_needed and a.image_id and a.record and a.record.image_id == a.image_id \
                    and a.record.ray == "":
                out[node] = (False, f"{self.pulled} has no Ray (its `ray --version` failed when "
                             "it was pulled), and start runs vLLM over Ray: use an image with "
                             "Ray, or build one (image.source: build)")
        return out


def start_check(inv: InventoryModel) -> PulledImageCheck | None:
    """The check for `start`, or None when the image is built (its Dockerfile installs Ray)."""
    if inv.image.source != "pull" or inv.image.ref is None:
        return None
    ref = f"{inv.image.name}:{imageid.pull_tag(inv.image.ref)}"
    return PulledImageCheck(ref, inv.image.ref, inv.image.name, needs_ray(inv))
