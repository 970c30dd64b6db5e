"""`model sync`: make every peer's cache entry match the source's, verified, node to node.

Stages, each comparing before it acts:
  1. scan every node (one agent call each);
  2. hash in place the blobs a peer holds at the right size but never verified: a good one
     is kept (a resumed copy does not send it again), a corrupt one is dropped;
  3. copy what peers still lack (copy.py), every receiver hashing each blob as it lands;
  4. rescan; anything that did not land (a hash mismatch, a broken stream) is copied once
     more, then reported as failed with the reason;
  5. hash any source blob no receiver has vouched for, so `ls` can call it verified.
A sync with nothing to do sends nothing and reports every node unchanged. The stages are
declared in `STAGES` and walked by `core.stages`; a node that fails leaves the run there.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from dgxcluster.core.progress import NullProgress, Progress
from dgxcluster.core.session import Session
from dgxcluster.core.stages import Ledger, Stage, walk
from dgxcluster.core.steps import Outcome, Status
from dgxcluster.core.units import human_bytes, human_rate
from dgxcluster.errors import ConnectError, StepError, UsageError
from dgxcluster.models.agent import NodeModels
from dgxcluster.models.copy import copy_round
from dgxcluster.models.layout import BlobState, CacheEntry, NodeCache
from dgxcluster.models.plan import bytes_of, group_by_need, needs, source_problems, to_verify
from dgxcluster.models.repoid import RepoId
from dgxcluster.remote.result import GroupResult

STEP = "model-sync"
ROUNDS = 2


@dataclass
class SyncReport:
    model: str
    source: str
    outcomes: list[Outcome] = field(default_factory=list)
    bytes_received: int = 0
    seconds: float = 0.0
    streams: int = 0

    @property
    def ok(self) -> bool:
        return all(o.status in (Status.CHANGED, Status.UNCHANGED) for o in self.outcomes)

    def to_json(self) -> dict[str, object]:
        return {"model": self.model, "source": self.source, "ok": self.ok,
                "bytes_received": self.bytes_received, "seconds": round(self.seconds, 3),
                "streams": self.streams, "nodes": [o.to_json() for o in self.outcomes]}


class _Run:
    """The state of one sync: every node's entry as last scanned, and what happened to it."""

    def __init__(self, session: Session, model: RepoId, source: str, prog: Progress) -> None:
        self.session = session
        self.model = model
        self.folder = model.folder
        self.source = source
        self.prog = prog
        self.nodes = [source] + [n for n in session.inventory.names if n != source]
        self.ledger = Ledger(self.nodes, prog)
        self.nm: dict[str, NodeModels] = {}
        self.entries: dict[str, CacheEntry | None] = {}
        self.free: dict[str, int] = {}
        self.notes: dict[str, list[str]] = {}
        self.found_corrupt: dict[str, list[str]] = {}
        self.deliveries: dict[str, list[Outcome]] = {}
        self.streams = 0

    @property
    def src(self) -> CacheEntry:
        e = self.entries[self.source]
        assert e is not None
        return e

    @property
    def live_peers(self) -> list[str]:
        return self.ledger.live(n for n in self.entries if n != self.source)

    def fail(self, node: str, err: BaseException | str) -> None:
        broke = [d.detail.splitlines()[0] for d in self.deliveries.get(node, []) if not d.ok]
        before = f"copy broke off ({broke[-1]}); then " if broke else ""
        if isinstance(err, ConnectError):
            o = Outcome(node, STEP, Status.UNREACHABLE, before + err.reason)
        else:
            o = Outcome(node, STEP, Status.FAILED, before + str(err).splitlines()[0])
        self.ledger.record(o, say=o.status.value)

    def note(self, node: str, text: str) -> None:
        self.notes.setdefault(node, []).append(text)

    def scan(self, nodes: Sequence[str]) -> GroupResult[NodeCache]:
        res = self.session.cluster.map(lambda c: self.nm[c.node].scan([self.folder]), nodes)
        for n, cache in res.values.items():
            self.entries[n] = cache.entries.get(self.folder)
            self.free[n] = cache.free_bytes
        for n, err in res.errors.items():
            if n != self.source:
                self.fail(n, err)
        return res


def sync(session: Session, model: RepoId, source: str | None = None, *,
         progress: Progress | None = None) -> SyncReport:
    """Copy `model`'s whole cache entry from `source` (default: the head) to every other node."""
    inv = session.inventory
    source = source or inv.head_name
    if source not in inv.names:
        raise UsageError(f"unknown node {source!r} (inventory has: {', '.join(inv.names)})",
                         "--from")
    t0 = time.monotonic()
    run = _Run(session, model, source, progress or NullProgress())
    walk(STAGES, run, run.ledger)
    report = SyncReport(str(model), source, _outcomes(run), streams=run.streams)
    report.bytes_received = sum(d.count("bytes") for ds in run.deliveries.values() for d in ds)
    report.seconds = time.monotonic() - t0
    return report


def _open(run: _Run) -> None:
    """Every node's HF cache and agent; the source must answer, a peer that does not is out."""
    for n in run.nodes:
        run.prog.status(n, "scanning")
    opened = run.session.cluster.map(lambda c: NodeModels.open(run.session, c.node), run.nodes)
    if run.source in opened.errors:
        raise opened.errors[run.source]
    run.nm = dict(opened.values)
    for n, err in opened.errors.items():
        run.fail(n, err)


def _first_scan(run: _Run) -> None:
    """What each node holds now; corrupt blobs a peer already knows of are noted."""
    first = run.scan([n for n in run.nodes if n in run.nm])
    if run.source in first.errors:
        raise first.errors[run.source]
    for n in run.live_peers:
        e = run.entries[n]
        bad = [b for b in (e.blobs if e else {}) if e and e.blob_state(b) is BlobState.CORRUPT]
        if bad:
            run.found_corrupt.setdefault(n, []).extend(sorted(bad))
    if run.entries.get(run.source) is None:
        holders = [n for n, e in run.entries.items() if e is not None and e.commits]
        hint = (f"{holders[0]} has it: dgxcluster model sync {run.model} --from {holders[0]}"
                if holders else f"download it first: dgxcluster model pull {run.model}")
        raise StepError(STEP, f"{run.model} is not in this node's HF cache "
                        f"({run.nm[run.source].hub}/{run.folder}); {hint}", node=run.source)


def _copy_rounds(run: _Run) -> None:
    for attempt in range(ROUNDS):
        if not _copy(run, attempt):
            break


def _verify_peers(run: _Run) -> None:
    work = {n: b for n in run.live_peers if (b := to_verify(run.src, run.entries[n]))}
    if not work:
        return
    timeout = run.session.inventory.model.sync_timeout_s
    for n, blobs in work.items():
        run.prog.status(n, f"hashing {len(blobs)} unverified blob(s) in place")
    res = run.session.cluster.map(
        lambda c: run.nm[c.node].verify(run.folder, work[c.node], remove_bad=True,
                                        timeout=timeout), list(work))
    for n, err in res.errors.items():
        run.fail(n, err)
    for n, report in res.values.items():
        good = sum(1 for r in report.values() if r.get("ok"))
        bad = sorted(b for b, r in report.items() if r.get("removed"))
        if good:
            run.note(n, f"{good} blob(s) verified in place")
        if bad:
            run.found_corrupt.setdefault(n, []).extend(bad)
    run.scan(list(res.values))


def _room(run: _Run, n: str) -> tuple[int, dict[str, int]]:
    """Free bytes for the copy, and the partial blobs an interrupted sync left there: they
    count as free (the receiver removes them before it writes anything)."""
    entry = run.entries[n]
    left = entry.leftovers if entry is not None else {}
    return run.free[n] + sum(left.values()), left


def _copy(run: _Run, attempt: int) -> bool:
    """One round; False when no peer lacks anything (nothing was sent)."""
    plans: dict[str, list[str]] = {}
    for n in run.live_peers:
        paths = needs(run.src, run.entries[n])
        size = bytes_of(run.src, paths)
        room, left = _room(run, n)
        if paths and size > room:
            run.fail(n, f"needs {human_bytes(size)} but the HF cache has "
                        f"{human_bytes(room)} free")
            continue
        if paths and left and not attempt:
            run.note(n, f"{len(left)} partial file(s) ({human_bytes(sum(left.values()))}) of "
                        "an interrupted copy found, removed before this one")
        plans[n] = paths
    groups = group_by_need(plans)
    if not groups:
        return False
    if attempt:
        run.prog.message(f"copying again to {', '.join(n for g in groups for n in g[0])}")
    got = copy_round(run.session, run.nm[run.source], run.nm, run.folder, groups, run.prog)
    run.streams += len(groups)
    for n, d in got.items():
        run.deliveries.setdefault(n, []).append(d)
    run.scan([run.source, *got])
    return True


def _verify_source(run: _Run) -> None:
    src = run.src
    blobs = sorted(b for b in src.blobs if src.blob_state(b) is BlobState.UNVERIFIED)
    if not blobs:
        return
    run.prog.status(run.source, f"hashing {len(blobs)} blob(s)")
    try:
        report = run.nm[run.source].verify(run.folder, blobs, remove_bad=False,
                                           timeout=run.session.inventory.model.sync_timeout_s)
    except StepError as exc:
        run.note(run.source, f"could not hash its blobs: {exc}")
        return
    run.note(run.source, f"{sum(1 for r in report.values() if r.get('ok'))} blob(s) verified")
    run.scan([run.source])


def _names(blobs: Sequence[str], n: int = 2) -> str:
    shown = ", ".join(b[:12] for b in blobs[:n])
    return shown + (f" and {len(blobs) - n} more" if len(blobs) > n else "")


def _outcomes(run: _Run) -> list[Outcome]:
    problems = source_problems(run.src)
    out: list[Outcome] = []
    for n in run.nodes:
        last = run.ledger.last_of(n)
        if last is not None and not last.ok:
            out.append(last)
        elif n == run.source:
            out.append(_source_outcome(run, problems.corrupt, problems.dangling))
        else:
            out.append(_peer_outcome(run, n, problems.corrupt))
        run.prog.status(n, out[-1].status.value)
    return out


def _source_outcome(run: _Run, corrupt: Sequence[str], dangling: Sequence[str]) -> Outcome:
    src = run.src
    what = f"source: {len(src.blobs)} blob(s), {human_bytes(src.size)}"
    notes = run.notes.get(run.source, [])
    if corrupt or dangling:
        bad = []
        if corrupt:
            bad.append(f"{len(corrupt)} blob(s) here do not match their hash ({_names(corrupt)}); "
                       "if a peer has good copies, sync --from that peer")
        if dangling:
            bad.append(f"{len(dangling)} snapshot file(s) here have no blob (incomplete download)")
        return Outcome(run.source, STEP, Status.FAILED, "; ".join([what, *bad]))
    return Outcome(run.source, STEP, Status.CHANGED if notes else Status.UNCHANGED,
                   "; ".join([what, *notes]))


def _peer_outcome(run: _Run, n: str, corrupt: Sequence[str]) -> Outcome:
    entry = run.entries[n]
    left = needs(run.src, entry)
    ds = run.deliveries.get(n, [])
    notes = list(run.notes.get(n, []))
    bad = run.found_corrupt.get(n, [])
    got = sum(d.count("bytes") for d in ds)
    if ds:
        secs = sum(d.duration_s for d in ds)
        rate = f" ({human_rate(got, secs)})" if secs > 0 and got else ""
        notes.insert(0, f"received {human_bytes(got)} in {secs:.1f}s{rate}"
                     + (f" over {len(ds)} copies" if len(ds) > 1 else ""))
    if not left:
        if bad:
            notes.append(f"{len(bad)} corrupt blob(s) found and replaced ({_names(bad)})")
        if not notes:
            return Outcome(n, STEP, Status.UNCHANGED, "complete and verified")
        return Outcome(n, STEP, Status.CHANGED, "; ".join(notes))
    if bad:
        notes.append(f"{len(bad)} corrupt blob(s) found ({_names(bad)})")
    why = _why_left(run, n, entry, left, ds)
    bad_src = [p for p in left if p.startswith("blobs/") and p[6:] in set(corrupt)]
    if bad_src:
        why.append(f"{len(bad_src)} of them: the source's own copy does not match its hash")
    return Outcome(n, STEP, Status.FAILED, "; ".join(why + notes))


def _why_left(run: _Run, n: str, entry: CacheEntry | None, left: Sequence[str],
              ds: Sequence[Outcome]) -> list[str]:
    if not left:
        return []
    blobs = [p[6:] for p in left if p.startswith("blobs/")]
    mismatched = [b for b in blobs if entry is not None and b in entry.checks
                  and not entry.checks[b].ok]
    why = [f"{len(left)} path(s) still missing"]
    if mismatched:
        why.append(f"{len(mismatched)} blob(s) failed the hash check after {len(ds)} "
                   f"copies ({_names(mismatched)})")
    failed = [d.detail for d in ds if not d.ok]
    if failed:
        why.append(failed[-1].splitlines()[0] if failed[-1] else "copy failed")
    return why


STAGES: tuple[Stage[_Run], ...] = (
    Stage("open", _open),
    Stage("scan", _first_scan),
    Stage("verify-peers", _verify_peers),
    Stage("copy", _copy_rounds),
    Stage("verify-source", _verify_source),
)
