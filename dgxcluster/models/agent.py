"""The model agent (`nodeside/hfcache.py`) on one node: where it and the HF cache live, how to call it.

The agent travels in dgxcluster's node-side bundle (`core.ship`), put on a node on first use
at a content-addressed path, so a changed agent never meets an old copy. Commands are argv;
lists of names travel on stdin or in a file.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from dgxcluster.core import ship
from dgxcluster.core.nodepaths import NodePaths
from dgxcluster.core.session import Session
from dgxcluster.errors import StepError
from dgxcluster.models.layout import NodeCache, ScanError, parse_scan
from dgxcluster.remote.connection import Connection
from dgxcluster.remote.result import Result


def hub_dir(paths: NodePaths, hf_cache: str) -> str:
    """`<hf_cache>/hub` as an absolute path on the node (what huggingface_hub uses)."""
    base = PurePosixPath(paths.expand(hf_cache))
    if not base.is_absolute():
        base = PurePosixPath(paths.home) / base
    return str(base / "hub")


@dataclass(frozen=True)
class NodeModels:
    """One node's HF hub directory, verification records and node-side bundle (`agent`)."""

    conn: Connection
    paths: NodePaths
    hub: str
    records: str
    agent: str

    @property
    def node(self) -> str:
        return self.conn.node

    @classmethod
    def open(cls, session: Session, node: str) -> NodeModels:
        inv = session.inventory
        conn = session.cluster.conn(node)
        return cls.at(conn, NodePaths.resolve(conn, inv.state_dir, inv.cluster),
                      inv.container.hf_cache)

    @classmethod
    def at(cls, conn: Connection, paths: NodePaths, hf_cache: str) -> NodeModels:
        """When the node's paths are known already (no round trip for $HOME)."""
        return cls(conn, paths, hub_dir(paths, hf_cache), paths.model_records_dir,
                   ship.path(paths))

    def _args(self, mode: str, *args: str) -> list[str]:
        return [mode, "--hub", self.hub, "--records", self.records, *args]

    def argv(self, mode: str, *args: str) -> list[str]:
        return [str(a) for a in ship.argv(self.agent, "hfcache", *self._args(mode, *args))]

    def run(self, mode: str, *args: str, stdin: bytes | None = None,
            timeout: float | None = None) -> Result:
        """Run the agent; the bundle is put on the node first if this is its first use there."""
        res = ship.run(self.conn, self.paths, "hfcache", *self._args(mode, *args), stdin=stdin,
                       timeout=timeout)
        if res.exit_code == 127 or "python3: not found" in res.stderr:
            raise StepError(f"model-{mode}", "python3 is needed on every node", node=self.node)
        return res

    def scan(self, folders: Sequence[str] = ()) -> NodeCache:
        args = [a for f in folders for a in ("--repo", f)]
        res = self.run("scan", *args)
        if res.exit_code != 0:
            raise StepError("model-scan", _tail(res), node=self.node)
        try:
            return parse_scan(res.stdout)
        except ScanError as exc:
            raise StepError("model-scan", str(exc), node=self.node) from None

    def verify(self, folder: str, blobs: Sequence[str], *, remove_bad: bool,
               timeout: float | None = None) -> dict[str, dict[str, Any]]:
        """Hash blobs in place; {blob: {"ok": bool, "actual": hex, "removed": bool} | error}."""
        args = ["--repo", folder] + (["--remove-bad"] if remove_bad else [])
        res = self.run("verify", *args, stdin=json.dumps({"blobs": list(blobs)}).encode(),
                       timeout=timeout)
        if res.exit_code != 0:
            raise StepError("model-verify", _tail(res), node=self.node)
        try:
            report = json.loads(res.stdout.strip().splitlines()[-1])["verified"]
        except (ValueError, KeyError, IndexError) as exc:
            raise StepError("model-verify", f"could not parse the agent's output ({exc})",
                            node=self.node) from None
        return {str(k): dict(v) for k, v in dict(report).items()}


def _tail(res: Result, n: int = 5) -> str:
    lines = (res.stderr or res.stdout).strip().splitlines()
    return f"exit {res.exit_code}: " + " | ".join(lines[-n:])
