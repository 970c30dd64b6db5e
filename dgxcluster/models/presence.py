"""Is a model revision complete and verified on each node? (pure: scans in, verdicts out)

No node can know alone that its snapshot lacks a file (the cache keeps no file list), so
the nodes are compared: the files of a snapshot are those any node has for that commit,
and a blob's size is the one seen where it is verified. A node is *complete* for a commit
when it has every one of those files, each pointing at a blob of the right size that is
not known corrupt, with no copy in progress; *verified* when every such blob is verified.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass

from dgxcluster.errors import ConnectError
from dgxcluster.models.layout import BlobState, CacheEntry
from dgxcluster.models.repoid import COMMIT_RE

#: A node's scan: its entry for the model (None: not in its cache), or why it has none.
NodeEntry = CacheEntry | None | BaseException


@dataclass(frozen=True)
class Presence:
    """One model revision on one node, as `ls` shows it and `start` checks it."""

    node: str
    model: str
    commit: str | None
    refs: tuple[str, ...] = ()
    files: int = 0
    size: int = 0
    complete: bool = False
    verified: bool = False
    reason: str = ""
    unreachable: bool = False

    def to_json(self) -> dict[str, object]:
        return {"node": self.node, "model": self.model, "commit": self.commit,
                "refs": list(self.refs), "files": self.files, "size_bytes": self.size,
                "complete": self.complete, "verified": self.verified, "reason": self.reason,
                "unreachable": self.unreachable}


def _expected(entries: Mapping[str, NodeEntry], commit: str) -> dict[str, str | None]:
    files: dict[str, str | None] = {}
    for e in entries.values():
        if isinstance(e, CacheEntry):
            for path, blob in e.snapshot(commit).items():
                if files.get(path) is None:
                    files[path] = blob
    return files


def _good_sizes(entries: Mapping[str, NodeEntry]) -> dict[str, int]:
    sizes: dict[str, int] = {}
    for e in entries.values():
        if isinstance(e, CacheEntry):
            for b, st in e.blobs.items():
                if e.blob_state(b) is BlobState.VERIFIED:
                    sizes[b] = st[0]
    return sizes


def evaluate(model: str, entries: Mapping[str, NodeEntry], commit: str) -> dict[str, Presence]:
    """Each node's state for one commit of one model."""
    expected = _expected(entries, commit)
    sizes = _good_sizes(entries)
    out: dict[str, Presence] = {}
    for node, e in entries.items():
        if isinstance(e, BaseException):
            out[node] = Presence(node, model, commit, reason=f"unreachable: {_why(e)}",
                                 unreachable=not _is_scan_failure(e))
            continue
        if e is None:
            out[node] = Presence(node, model, commit, reason="not in this node's cache")
            continue
        out[node] = _one(node, model, e, commit, expected, sizes)
    return out


def _is_scan_failure(e: BaseException) -> bool:
    return not isinstance(e, ConnectError)


def _why(e: BaseException) -> str:
    return e.reason if isinstance(e, ConnectError) else str(e).splitlines()[0]


def _one(node: str, model: str, e: CacheEntry, commit: str, expected: Mapping[str, str | None],
         sizes: Mapping[str, int]) -> Presence:
    have = e.snapshot(commit)
    refs = tuple(e.refs_to(commit))
    if not have:
        why = f"no snapshot {commit[:12]} here"
        if e.partial:
            why += f"; a copy was interrupted ({len(e.partial)} partial file(s))"
        return Presence(node, model, commit, refs, 0, e.size, reason=why)
    missing = [p for p in expected if p not in have]
    blobs = {b for b in have.values() if b is not None}
    absent = sorted(b for b in blobs if b not in e.blobs)
    wrong = sorted(b for b in blobs if b in e.blobs and b in sizes and e.blobs[b][0] != sizes[b])
    corrupt = sorted(b for b in blobs if e.blob_state(b) is BlobState.CORRUPT)
    unverified = sorted(b for b in blobs if e.blob_state(b) is BlobState.UNVERIFIED)
    in_flight = [b for b in e.partial if b.split(".", 1)[0] in set(absent)]
    problems = []
    if missing:
        problems.append(f"{len(missing)} of {len(expected)} files missing")
    if absent:
        problems.append(f"{len(absent)} blob(s) missing")
    if in_flight:
        problems.append("a copy was interrupted")
    if wrong:
        problems.append(f"{len(wrong)} blob(s) of the wrong size")
    if corrupt:
        problems.append(f"{len(corrupt)} blob(s) failed their hash check")
    complete = not (missing or absent or wrong or corrupt)
    verified = complete and not unverified
    if complete and unverified:
        problems.append(f"{len(unverified)} of {len(blobs)} blob(s) not verified "
                        "(never hash-checked here, or changed since)")
    size = sum(e.blobs[b][0] for b in blobs if b in e.blobs)
    return Presence(node, model, commit, refs, len(have), size, complete, verified,
                    "; ".join(problems))


def reference_commit(entries: Mapping[str, NodeEntry], revision: str, prefer: str) -> str | None:
    """The commit `revision` names: as the `prefer` node (the head) resolves it, else as
    most nodes do; a full commit hash names itself."""
    if COMMIT_RE.fullmatch(revision):
        return revision
    first = entries.get(prefer)
    if isinstance(first, CacheEntry) and first.resolve(revision):
        return first.resolve(revision)
    votes = Counter(c for e in entries.values() if isinstance(e, CacheEntry)
                    for c in [e.resolve(revision)] if c)
    return votes.most_common(1)[0][0] if votes else None


def revision_presence(model: str, entries: Mapping[str, NodeEntry], revision: str,
                      prefer: str) -> dict[str, Presence]:
    """Each node's state for `revision` (branch, tag or commit), as `start` needs it: the
    node must hold the commit the head resolves it to, and resolve it the same way itself
    (vLLM on each node reads its own refs/)."""
    commit = reference_commit(entries, revision, prefer)
    if commit is None:
        return {
            n: Presence(n, model, None, reason=(
                f"unreachable: {_why(e)}" if isinstance(e, BaseException)
                else "not in this node's cache" if e is None
                else f"no ref {revision!r} here and no node resolves it"),
                unreachable=isinstance(e, BaseException) and not _is_scan_failure(e))
            for n, e in entries.items()
        }
    out = evaluate(model, entries, commit)
    for node, e in entries.items():
        if not isinstance(e, CacheEntry) or COMMIT_RE.fullmatch(revision):
            continue
        mine = e.resolve(revision)
        p = out[node]
        if mine != commit:
            why = (f"refs/{revision} is missing here" if mine is None
                   else f"refs/{revision} points to {mine[:12]} here, not {commit[:12]}")
            out[node] = Presence(node, model, commit, p.refs, p.files, p.size, False, False,
                                 "; ".join(x for x in (why, p.reason) if x))
    return out
