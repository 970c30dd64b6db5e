"""What a bench result records about the setup it measured, from the cluster itself.

From the running head container (one `docker ps` on the head, by the cluster label): the
config hash `start` recorded (`dgxcluster.config`) and the image's content tag (the `ctx-...`
tag it runs). From the inventory: the model and revision served, the node count, and the
executor, fabric topology and recipe where the inventory has such keys (`serve.executor`,
`fabric.topology`, `serve.recipe` or a top-level `recipe`), read generically so that keys
added later are picked up; without them: executor `ray` (the only one before), topology
`direct` for two nodes (one cable) and unknown otherwise, no recipe. vLLM's version comes
from the endpoint's `/version` (bench/run.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dgxcluster.core import docker, naming
from dgxcluster.errors import DgxClusterError

if TYPE_CHECKING:
    from dgxcluster.core.session import Session
    from dgxcluster.inventory.schema import InventoryModel

DEFAULT_EXECUTOR = "ray"
DIRECT = "direct"


def _key(section: object, name: str) -> str | None:
    value = getattr(section, name, None)
    if value is None:
        return None
    return str(getattr(value, "value", value))  # an Enum's value, else the value


def from_inventory(inv: InventoryModel) -> dict[str, object]:
    recipe = _key(inv.serve, "recipe") or _key(inv, "recipe")
    return {
        "model": inv.serve.model,
        "revision": inv.serve.revision,
        "node_count": len(inv.nodes),
        "executor": _key(inv.serve, "executor") or DEFAULT_EXECUTOR,
        "topology": _key(inv.fabric, "topology") or (DIRECT if len(inv.nodes) == 2 else None),
        "recipe": recipe,
    }


def from_head(session: Session) -> dict[str, object]:
    """The running head container's config hash and content tag (raises DgxClusterError when
    the head cannot be asked; empty when no head container runs)."""
    inv = session.inventory
    conn = session.cluster.conn(inv.head_name)
    containers = docker.list_cluster(conn, inv.cluster, step="bench")
    head = next((c for c in containers if c.running
                 and c.labels.get(naming.LABEL_ROLE) == "head"), None)
    if head is None:
        return {}
    tag = head.image.rpartition(":")[2] if ":" in head.image.rpartition("/")[2] else None
    return {"config_hash": head.labels.get(naming.LABEL_CONFIG),
            "image_tag": tag if tag and naming.is_content_tag(tag) else None}


def collect(session: Session) -> tuple[dict[str, object], list[str]]:
    """Everything known, and notes on what could not be read (the bench runs anyway)."""
    measured = from_inventory(session.inventory)
    notes: list[str] = []
    try:
        running = from_head(session)
    except DgxClusterError as exc:
        notes.append(f"config hash and image tag unknown: {exc}")
        return measured, notes
    if not running:
        notes.append(f"config hash and image tag unknown: no head container of cluster "
                     f"{session.inventory.cluster} runs on {session.inventory.head_name}")
    measured.update(running)
    return measured, notes
