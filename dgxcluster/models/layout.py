"""What a node's HF cache holds for a model, parsed from the node agent's `scan` (pure).

An entry is `models--org--name/` with `blobs/<hash>` (the bytes), `snapshots/<commit>/...`
(relative symlinks into blobs), `refs/<name>` (a commit hash) and sometimes `.no_exist/`.
Each blob also has a state on that node, from the node's verification record:
verified (a passing hash check of exactly this file: same size, mtime, ctime, inode),
corrupt (a failing one, file unchanged since), or unverified (never checked, or changed).
"""

from __future__ import annotations

import enum
import json
import posixpath
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from dgxcluster.models.repoid import COMMIT_RE

StatKey = tuple[int, int, int, int]  # size, mtime_ns, ctime_ns, inode
#: A blob being received (nodeside/hfcache.py's TMP_SUFFIX): what an interrupted `model sync`
#: leaves behind; the next receive removes it before it writes anything.
INCOMING_SUFFIX = ".dgxc-incoming"


class BlobState(str, enum.Enum):
    VERIFIED = "verified"
    UNVERIFIED = "unverified"
    CORRUPT = "corrupt"
    MISSING = "missing"


@dataclass(frozen=True)
class Check:
    """One recorded hash check of a blob."""

    ok: bool
    stat: StatKey | None
    actual: str = ""


class ScanError(ValueError):
    """The node agent's output could not be understood."""


def hash_scheme(name: str) -> str:
    """How a blob's name says it can be checked: sha256, git-sha1, or only by size."""
    if len(name) == 64 and all(c in "0123456789abcdef" for c in name):
        return "sha256"
    if len(name) == 40 and all(c in "0123456789abcdef" for c in name):
        return "git-sha1"
    return "size"


def link_blob(path: str, target: str) -> str | None:
    """The blob a link at `path` (relative to the entry) points to, or None if not a blob."""
    if target.startswith("/"):
        return None
    resolved = posixpath.normpath(posixpath.join(posixpath.dirname(path), target))
    parts = resolved.split("/")
    if len(parts) == 2 and parts[0] == "blobs":
        return parts[1]
    return None


@dataclass
class CacheEntry:
    """One model's cache entry on one node."""

    folder: str
    blobs: dict[str, StatKey] = field(default_factory=dict)
    partial: dict[str, int] = field(default_factory=dict)
    links: dict[str, str] = field(default_factory=dict)
    files: dict[str, tuple[int, str | None]] = field(default_factory=dict)
    refs: dict[str, str] = field(default_factory=dict)
    odd: list[str] = field(default_factory=list)
    checks: dict[str, Check] = field(default_factory=dict)

    def blob_size(self, name: str) -> int | None:
        st = self.blobs.get(name)
        return None if st is None else st[0]

    def blob_state(self, name: str) -> BlobState:
        st = self.blobs.get(name)
        if st is None:
            return BlobState.MISSING
        check = self.checks.get(name)
        if check is None or check.stat != st:
            return BlobState.UNVERIFIED
        return BlobState.VERIFIED if check.ok else BlobState.CORRUPT

    @property
    def commits(self) -> list[str]:
        """Snapshot directories (commit hashes) present."""
        found = {p.split("/")[1] for p in (*self.links, *self.files)
                 if p.startswith("snapshots/") and p.count("/") >= 2}
        return sorted(found)

    def snapshot(self, commit: str) -> dict[str, str | None]:
        """Files of one snapshot: path in the repo -> blob name (None: a plain file, no blob)."""
        prefix = f"snapshots/{commit}/"
        out: dict[str, str | None] = {}
        for path, target in self.links.items():
            if path.startswith(prefix):
                out[path[len(prefix):]] = link_blob(path, target)
        for path in self.files:
            if path.startswith(prefix):
                out[path[len(prefix):]] = None
        return out

    def resolve(self, revision: str) -> str | None:
        """The commit a branch/tag/commit names on this node (None if unknown here)."""
        if revision in self.refs and COMMIT_RE.fullmatch(self.refs[revision]):
            return self.refs[revision]
        if COMMIT_RE.fullmatch(revision):
            return revision
        return None

    def refs_to(self, commit: str) -> list[str]:
        return sorted(r for r, c in self.refs.items() if c == commit)

    @property
    def size(self) -> int:
        return sum(st[0] for st in self.blobs.values())

    @property
    def leftovers(self) -> dict[str, int]:
        """Partial blobs an interrupted `model sync` left (not a downloader's `.incomplete`)."""
        return {b: n for b, n in self.partial.items() if b.endswith(INCOMING_SUFFIX)}


@dataclass
class NodeCache:
    """One node's hub directory and the entries asked for."""

    hub: str
    hub_exists: bool
    free_bytes: int
    entries: dict[str, CacheEntry] = field(default_factory=dict)


def parse_scan(text: str) -> NodeCache:
    """Parse `model-agent scan` JSON; ScanError with a short reason if it is not that."""
    try:
        raw = json.loads(text.strip().splitlines()[-1])
        cache = NodeCache(str(raw["hub"]), bool(raw["hub_exists"]), int(raw["free_bytes"]))
        for folder, e in dict(raw["repos"]).items():
            cache.entries[str(folder)] = _entry(str(folder), e)
    except (ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
        raise ScanError(f"could not parse model-agent scan output ({exc})") from None
    return cache


def _stat(v: Any) -> StatKey:
    a, b, c, d = (int(x) for x in v)
    return (a, b, c, d)


def _entry(folder: str, e: Mapping[str, Any]) -> CacheEntry:
    entry = CacheEntry(folder)
    entry.blobs = {str(k): _stat(v) for k, v in dict(e["blobs"]).items()}
    entry.partial = {str(k): int(v) for k, v in dict(e.get("partial", {})).items()}
    entry.links = {str(k): str(v) for k, v in dict(e["links"]).items()}
    entry.files = {str(k): (int(v[0]), None if v[1] is None else str(v[1]))
                   for k, v in dict(e["files"]).items()}
    entry.refs = {str(k): str(v) for k, v in dict(e.get("refs", {})).items()}
    entry.odd = [str(x) for x in e.get("odd", [])]
    record = e.get("record") or {}
    for name, c in dict(record.get("blobs", {})).items():
        if not isinstance(c, Mapping):
            continue
        st = c.get("stat")
        entry.checks[str(name)] = Check(bool(c.get("ok")), _stat(st) if st else None,
                                        str(c.get("actual", "")))
    return entry
