"""One copy round: stream each group of peers the paths they lack, straight from the source.

Peers lacking the same paths share one stream (the usual case: all of them, or one that
was cut off); groups that differ get their own stream, all at once. Bytes go source ->
peers over the fabric via `core.relay`, never through the operator.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor

from dgxcluster.core.progress import Progress
from dgxcluster.core.relay import relay
from dgxcluster.core.session import Session
from dgxcluster.core.steps import Outcome, Status
from dgxcluster.errors import DgxClusterError
from dgxcluster.models.agent import NodeModels

STEP = "model-copy"


def copy_round(session: Session, src: NodeModels, peers: Mapping[str, NodeModels], folder: str,
               groups: list[tuple[list[str], list[str]]], progress: Progress) -> dict[str, Outcome]:
    """Run every group's stream in parallel; one Outcome per peer (`data["bytes"]`: what it
    received; whether the files are right is judged by rescanning). The agent is already on
    every node (the scan before this put it there)."""
    settings = session.inventory.model

    def one(group: tuple[list[str], list[str]]) -> dict[str, Outcome]:
        nodes, paths = group
        plan = src.paths.tmp_file(f"model-send-{secrets.token_hex(6)}.json")
        try:
            src.conn.put(json.dumps({"paths": paths}).encode(), plan, mode=0o600)
            res = relay(
                session, src.node, src.argv("send", "--repo", folder, "--list", plan),
                {n: peers[n].argv("recv", "--repo", folder) for n in nodes},
                timeout=settings.sync_timeout_s, progress=progress, step="model-sync",
                idle_timeout=settings.idle_timeout_s, finish_timeout=settings.idle_timeout_s,
            )
            got = {n: res.targets.get(n) or Outcome(n, STEP, Status.FAILED,
                                                     "no result from the copy") for n in nodes}
        except (DgxClusterError, OSError) as exc:
            got = {n: Outcome(n, STEP, Status.FAILED, f"copy failed: {exc}") for n in nodes}
        return got

    out: dict[str, Outcome] = {}
    with ThreadPoolExecutor(max_workers=max(len(groups), 1), thread_name_prefix="model-copy") as pool:
        for got in pool.map(one, groups):
            out.update(got)
    return out
