"""`dgxcluster logs`: every node's logs and host facts in one folder and one archive, at once.

Each node runs one fixed script (`script.py`) on one SSH channel; its gzip stream is
decompressed, split and redacted here as it arrives (`stream.py`, `items.py`), so nothing
is written on the nodes and no node waits for another. An unreachable node or a failing
item is recorded in `manifest.json` and never stops the others.
"""

from __future__ import annotations

import json
import os
import tarfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from dgxcluster.core.nodepaths import NodePaths
from dgxcluster.core.progress import NullProgress, Progress
from dgxcluster.core.session import Session
from dgxcluster.core.steps import Outcome, Status
from dgxcluster.core.units import human_bytes
from dgxcluster.errors import CommandTimeout, ConnectError, UsageError
from dgxcluster.logs.items import ItemRecord, NodeFolder
from dgxcluster.logs.script import collect_argv, new_boundary
from dgxcluster.logs.stream import Demux, Inflater, StreamError
from dgxcluster.remote.connection import Connection
from dgxcluster.secrets import DEFAULT_SECRET_NAMES, SECRET_NAME_WORDS, CollectedRedactor

#: A whole node's collection may take long (big logs over a slow link); the transport's
#: default command timeout is for ordinary commands.
COLLECT_TIMEOUT_S = 1800.0
#: Logs are text and compress well even at the fastest level; speed matters more here.
ARCHIVE_LEVEL = 1


@dataclass
class NodeCollection:
    """One node's entry in the manifest: what was collected (files, items, the node's clock)
    and whether it worked. The per-node step outcome is `.outcome`; the rest is the
    bundle's data, written to manifest.json as it always was."""

    node: str
    reachable: bool = True
    complete: bool = False
    duration_s: float = 0.0
    received_bytes: int = 0
    error: str | None = None
    node_clock: int | None = None
    items: list[ItemRecord] = field(default_factory=list)
    files: list[tuple[str, int]] = field(default_factory=list)

    @property
    def outcome(self) -> Outcome:
        if not self.reachable:
            status = Status.UNREACHABLE
        elif self.error:
            status = Status.FAILED
        else:
            status = Status.CHANGED  # a new bundle entry, every time
        return Outcome(self.node, "logs", status, self.error or "collected", self.duration_s)

    @property
    def item_errors(self) -> list[tuple[str, str]]:
        return [(i.name, i.error) for i in self.items if i.error]

    def to_json(self) -> dict[str, object]:
        return {
            "reachable": self.reachable,
            "complete": self.complete,
            "duration_s": round(self.duration_s, 3),
            "received_bytes": self.received_bytes,
            "node_clock": self.node_clock,
            "error": self.error,
            "files": [{"path": p, "size": s} for p, s in self.files],
            "errors": [{"item": n, "error": e} for n, e in self.item_errors],
            "items": [i.to_json() for i in self.items],
        }


@dataclass
class Bundle:
    folder: Path
    archive: Path
    manifest: Path
    nodes: dict[str, NodeCollection]
    duration_s: float

    @property
    def unreachable(self) -> list[str]:
        return [n for n, r in self.nodes.items() if not r.reachable]

    @property
    def failed(self) -> list[str]:
        return [n for n, r in self.nodes.items() if r.reachable and r.error]

    @property
    def outcomes(self) -> list[Outcome]:
        return [r.outcome for r in self.nodes.values()]


def prepare_output(out_dir: Path) -> Path:
    """Check -o before any node is contacted: it must be (or become) a writable folder."""
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"{out_dir} exists and is not a directory", "-o")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create {out_dir}: {exc.strerror or exc}", "-o") from None
    if not os.access(out_dir, os.W_OK | os.X_OK):
        raise UsageError(f"{out_dir} is not writable", "-o")
    return out_dir


def bundle_folder(out_dir: Path, cluster: str, now: datetime) -> Path:
    stamp = now.astimezone(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    base = out_dir / f"{cluster}-{stamp}"
    folder, n = base, 1
    while folder.exists() or folder.with_name(folder.name + ".tar.gz").exists():
        n += 1
        folder = base.with_name(f"{base.name}-{n}")
    folder.mkdir(parents=True)
    return folder


def collect(
    session: Session,
    nodes: Sequence[str] | None = None,
    *,
    out_dir: Path,
    since_s: int = 0,
    progress: Progress | None = None,
    timeout: float = COLLECT_TIMEOUT_S,
) -> Bundle:
    """Collect from the selected nodes in parallel into a new folder under out_dir."""
    prog = progress or NullProgress()
    inv = session.inventory
    targets = session.cluster.select(nodes)
    prepare_output(out_dir)
    started = time.monotonic()
    folder = bundle_folder(out_dir, inv.cluster, datetime.now(timezone.utc))
    redactor = CollectedRedactor(inv.secrets.env, session.redactor)
    boundary = new_boundary()
    log_dir = NodePaths.unresolved(inv.state_dir, inv.cluster).log_dir
    argv = collect_argv(boundary, inv.cluster, log_dir, since_s, inv.fabric.interfaces)

    archive = _Archive(folder)

    def one(conn: Connection) -> NodeCollection:
        rep = collect_node(conn, folder / conn.node, argv, boundary, redactor, prog, timeout)
        rep.files = _files(folder, folder / conn.node)
        archive.add(folder / conn.node)  # while slower nodes are still collecting
        return rep

    try:
        group = session.cluster.map(one, targets)
        reports: dict[str, NodeCollection] = {}
        for name in group:
            value = group[name]
            if isinstance(value, NodeCollection):
                reports[name] = value
            else:  # collect_node records its own errors; this is a bug or an interrupt
                reports[name] = NodeCollection(name, error=f"{type(value).__name__}: {value}")
                reports[name].files = _files(folder, folder / name)
                archive.add(folder / name)
        manifest = folder / "manifest.json"
        doc = {
            "cluster": inv.cluster,
            "created_utc": folder.name[len(inv.cluster) + 1 :],
            "since_s": since_s or None,
            "nodes_selected": targets,
            "redaction": {
                "names": sorted({*inv.secrets.env, *DEFAULT_SECRET_NAMES}),
                "name_words": list(SECRET_NAME_WORDS),
                "shapes": ["hf_ followed by 20+ letters/digits"],
            },
            "nodes": {n: reports[n].to_json() for n in targets},
        }
        manifest.write_text(json.dumps(doc, indent=2) + "\n")
        archive.add(manifest)
        path = archive.close()
    except BaseException:
        archive.abort()
        raise
    return Bundle(folder, path, manifest, reports, time.monotonic() - started)


def collect_node(
    conn: Connection,
    node_dir: Path,
    argv: list[str],
    boundary: str,
    redactor: CollectedRedactor,
    progress: Progress,
    timeout: float,
) -> NodeCollection:
    """One node: run the script, write what it streams back, record what happened."""
    node = conn.node
    node_dir.mkdir(parents=True, exist_ok=True)
    rep = NodeCollection(node)
    progress.status(node, "collecting")

    last = [time.monotonic()]

    def moved(item: str, received: int) -> None:
        if time.monotonic() - last[0] >= 1.0:  # a live hint, not a line per item
            last[0] = time.monotonic()
            progress.status(node, f"{item} ({human_bytes(received)} so far)")

    sink = NodeFolder(node_dir, redactor, on_progress=moved)
    inflater = Inflater(Demux(boundary, sink))
    broken: list[str] = []

    def feed(chunk: bytes) -> None:
        if broken:
            return  # drain: keep the channel flowing, write nothing more
        try:
            inflater.feed(chunk)
        except (StreamError, OSError) as exc:
            broken.append(f"could not write what the node sent: {exc}")

    t0 = time.monotonic()
    try:
        result = conn.run(argv, timeout=timeout, on_stdout_chunk=feed)
        if not broken:
            inflater.close()
        if result.exit_code != 0 and not broken:
            tail = " | ".join(result.stderr.strip().splitlines()[-3:])
            broken.append(f"collection script exited {result.exit_code}: {tail}".rstrip(": "))
    except ConnectError as exc:
        rep.reachable = False
        broken.append(exc.reason)
    except CommandTimeout as exc:
        broken.append(str(exc))
    except StreamError as exc:
        broken.append(str(exc))
    finally:
        sink.close()
    rep.duration_s = time.monotonic() - t0
    rep.received_bytes = inflater.compressed_bytes
    _record(rep, sink, broken, redactor)
    progress.status(node, _summary(rep))
    return rep


def _record(rep: NodeCollection, sink: NodeFolder, broken: list[str],
            redactor: CollectedRedactor) -> None:
    """What the node's stream left: its items, its clock, and the error if it fell short."""
    rep.complete = sink.complete and not broken
    rep.items = list(sink.items.values())
    now = sink.node_facts.get("now")
    rep.node_clock = int(now) if now and now.isdigit() else None
    if broken:
        rep.error = redactor.text("; ".join(broken))
    elif not sink.complete:
        rep.error = "the node's stream ended early (connection lost?)"


def _summary(rep: NodeCollection) -> str:
    if not rep.reachable:
        return f"unreachable: {rep.error}"
    if rep.error:
        return f"failed: {rep.error}"
    errs = len(rep.item_errors)
    note = f", {errs} item(s) with errors (see manifest)" if errs else ""
    return f"done in {rep.duration_s:.1f}s{note}"


def _files(folder: Path, node_dir: Path) -> list[tuple[str, int]]:
    out: list[tuple[str, int]] = []
    if not node_dir.is_dir():
        return out
    for dirpath, _dirs, names in os.walk(node_dir):
        for name in sorted(names):
            p = Path(dirpath) / name
            out.append((p.relative_to(folder).as_posix(), p.stat().st_size))
    return sorted(out)


class _Archive:
    """The bundle's .tar.gz, filled node by node as each finishes (so archiving overlaps
    the collection of slower nodes), then the manifest; renamed into place when complete."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.path = folder.with_name(folder.name + ".tar.gz")
        self._part = self.path.with_name(self.path.name + ".part")
        self._lock = threading.Lock()
        self._tar = tarfile.open(self._part, "w:gz", compresslevel=ARCHIVE_LEVEL)  # noqa: SIM115

    def add(self, path: Path) -> None:
        if not path.exists():
            return
        with self._lock:
            self._tar.add(path, arcname=path.relative_to(self.folder.parent).as_posix())

    def close(self) -> Path:
        with self._lock:
            self._tar.close()
        self._part.replace(self.path)
        return self.path

    def abort(self) -> None:
        with self._lock:
            try:
                self._tar.close()
            finally:
                self._part.unlink(missing_ok=True)
