"""One copy round: stream each group of peers the paths they lack, straight from the source.

Peers lacking the same paths share one stream (the usual case: all of them, or one that
was cut off); groups that differ get their own stream, all at once. Bytes go source ->
peers over the fabric via `transfer.relay`, never through the operator.
"""

from __future__ import annotations

import json
import secrets
import threading
from collections.abc import Mapping
from dataclasses import dataclass

from dgxcluster.core.progress import Progress
from dgxcluster.core.relay import TargetOutcome, relay
from dgxcluster.core.session import Session
from dgxcluster.errors import DgxClusterError
from dgxcluster.models.agent import NodeModels


@dataclass
class Delivery:
    """What one peer got in one round (the data itself is judged by rescanning it)."""

    node: str
    ok: bool
    detail: str
    bytes: int = 0
    seconds: float = 0.0


def copy_round(session: Session, src: NodeModels, peers: Mapping[str, NodeModels], folder: str,
               groups: list[tuple[list[str], list[str]]], progress: Progress) -> dict[str, Delivery]:
    """Run every group's stream in parallel; one Delivery per peer. The agent is already on
    every node (the scan before this put it there)."""
    settings = session.inventory.model
    out: dict[str, Delivery] = {}
    lock = threading.Lock()

    def one(nodes: list[str], paths: list[str]) -> None:
        plan = src.paths.tmp_file(f"model-send-{secrets.token_hex(6)}.json")
        try:
            src.conn.put(json.dumps({"paths": paths}).encode(), plan, mode=0o600)
            res = relay(
                session, src.node, src.argv("send", "--repo", folder, "--list", plan),
                {n: peers[n].argv("recv", "--repo", folder) for n in nodes},
                timeout=settings.sync_timeout_s, progress=progress, step="model-sync",
                idle_timeout=settings.idle_timeout_s, finish_timeout=settings.idle_timeout_s,
            )
            got = {n: _delivery(res.targets.get(n), n) for n in nodes}
        except (DgxClusterError, OSError) as exc:
            got = {n: Delivery(n, False, f"copy failed: {exc}") for n in nodes}
        with lock:
            out.update(got)

    threads = [threading.Thread(target=one, args=g, daemon=True, name="model-copy") for g in groups]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def _delivery(t: TargetOutcome | None, node: str) -> Delivery:
    if t is None:
        return Delivery(node, False, "no result from the copy")
    return Delivery(node, t.ok, t.detail, t.bytes, t.seconds)
