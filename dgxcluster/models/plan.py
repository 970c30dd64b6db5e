"""What each peer lacks of the source's cache entry (pure: entries in, paths out).

Compare first, then act: a peer is sent only the paths it lacks or holds wrong, blobs
first, then snapshot links and small files, refs last (so a ref never names a snapshot
that is not there yet). Nothing on a peer is deleted except blobs proven corrupt.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from dgxcluster.models.layout import BlobState, CacheEntry, link_blob


@dataclass(frozen=True)
class SourceProblems:
    """What the source itself cannot provide."""

    corrupt: tuple[str, ...] = ()   # blobs whose recorded hash check failed
    dangling: tuple[str, ...] = ()  # snapshot links whose blob is missing on the source

    @property
    def any(self) -> bool:
        return bool(self.corrupt or self.dangling)


def source_problems(src: CacheEntry) -> SourceProblems:
    corrupt = tuple(sorted(b for b in src.blobs if src.blob_state(b) is BlobState.CORRUPT))
    dangling = tuple(sorted(
        p for p, blob in _link_blobs(src).items() if blob is not None and blob not in src.blobs
    ))
    return SourceProblems(corrupt, dangling)


def _link_blobs(entry: CacheEntry) -> dict[str, str | None]:
    return {p: link_blob(p, t) for p, t in entry.links.items()}


def to_verify(src: CacheEntry, peer: CacheEntry | None) -> list[str]:
    """Blobs the peer holds at the right size but has not verified: hash them there first,
    so a complete file is kept (not re-sent) and a corrupt one is found."""
    if peer is None:
        return []
    return sorted(
        b for b, st in src.blobs.items()
        if peer.blob_size(b) == st[0] and peer.blob_state(b) is BlobState.UNVERIFIED
    )


def needs(src: CacheEntry, peer: CacheEntry | None) -> list[str]:
    """Paths (relative to the entry) the peer must receive, in sending order."""
    bad_links = {p for p, blob in _link_blobs(src).items()
                 if blob is not None and blob not in src.blobs}
    empty = CacheEntry(src.folder)
    have = peer or empty
    blobs = [
        f"blobs/{b}" for b, st in sorted(src.blobs.items(), key=lambda kv: (-kv[1][0], kv[0]))
        if not (have.blob_size(b) == st[0] and have.blob_state(b) is BlobState.VERIFIED)
    ]
    links = [p for p, t in sorted(src.links.items())
             if p not in bad_links and have.links.get(p) != t]
    files = [p for p, f in sorted(src.files.items())
             if not p.startswith("refs/") and have.files.get(p) != f]
    refs = [p for p, f in sorted(src.files.items())
            if p.startswith("refs/") and have.files.get(p) != f]
    if bad_links:
        refs = []  # never point a ref at a snapshot the source cannot complete
    return blobs + links + files + refs


def bytes_of(src: CacheEntry, paths: Iterable[str]) -> int:
    total = 0
    for p in paths:
        if p.startswith("blobs/"):
            total += src.blob_size(p[6:]) or 0
        elif p in src.files:
            total += src.files[p][0]
    return total


def group_by_need(plans: Mapping[str, list[str]]) -> list[tuple[list[str], list[str]]]:
    """Peers that lack exactly the same paths share one stream: [(peers, paths)]."""
    groups: dict[tuple[str, ...], list[str]] = {}
    for node, paths in plans.items():
        if paths:
            groups.setdefault(tuple(paths), []).append(node)
    return [(nodes, list(paths)) for paths, nodes in groups.items()]
