"""Where each item of a node's stream lands in the bundle, and what is recorded about it.

`NodeFolder` is the `ItemSink` for one node: it writes container logs and host facts as
redacted files, unpacks log folders (tar items) into plain files, and keeps, per item, its
exit status, duration, size and errors for the manifest.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from dgxcluster.logs.unpack import TarUnpacker
from dgxcluster.secrets import CollectedRedactor

#: Tar items and the folder they unpack into (relative to the node's folder).
TAR_SUFFIX = ".tar"
STDERR_KEEP = 4000


@dataclass
class ItemRecord:
    name: str
    exit_code: int | None = None
    duration_s: float | None = None
    bytes: int = 0
    stderr: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def error(self) -> str | None:
        if self.exit_code is None:
            return "incomplete: the stream ended before this item finished"
        if self.exit_code != 0:
            reason = _last_lines(self.stderr) or f"exited {self.exit_code}"
            return f"exit {self.exit_code}: {reason}"
        return None

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {
            "name": self.name,
            "exit_code": self.exit_code,
            "duration_s": self.duration_s,
            "bytes": self.bytes,
        }
        if self.error:
            out["error"] = self.error
        elif self.stderr.strip():
            out["stderr"] = _last_lines(self.stderr)
        if self.notes:
            out["notes"] = self.notes
        if "simulated hardware" in self.stderr:  # the testbed's stand-in tools say so
            out["simulated_hardware"] = True
        return out


def _last_lines(text: str, n: int = 5) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return " | ".join(lines[-n:])[-STDERR_KEEP:]


def _safe_rel(name: str) -> PurePosixPath:
    parts = [p for p in PurePosixPath(name).parts if p not in ("", ".", "..", "/")]
    return PurePosixPath(*parts) if parts else PurePosixPath("unnamed")


class NodeFolder:
    """The `ItemSink` writing one node's items under `root` (the node's folder)."""

    def __init__(
        self,
        root: Path,
        redactor: CollectedRedactor,
        on_progress: Callable[[str, int], None] | None = None,
    ) -> None:
        self.root = root
        self.redactor = redactor
        self.items: dict[str, ItemRecord] = {}
        self.node_facts: dict[str, str] = {}
        self.complete = False
        self._on_progress = on_progress
        self._current: ItemRecord | None = None
        self._mode = "body"
        self._fh: BinaryIO | None = None
        self._feed: Callable[[bytes], None] | None = None
        self._close: Callable[[], None] | None = None
        self._unpacker: TarUnpacker | None = None
        self._stderr: list[bytes] = []
        self.received = 0

    # -- ItemSink ------------------------------------------------------------------------

    def begin(self, name: str) -> None:
        self._finish_body()
        rec = ItemRecord(name)
        self.items[name] = rec
        self._current = rec
        self._mode = "body"
        if self._on_progress is not None:
            self._on_progress(name, self.received)

    def body(self, data: bytes) -> None:
        rec = self._current
        if rec is None:
            return
        self.received += len(data)
        if self._mode == "stderr":
            self._stderr.append(data)
            return
        rec.bytes += len(data)
        if self._feed is None:
            self._open(rec.name)
        assert self._feed is not None
        self._feed(data)

    def stderr(self, name: str) -> None:
        self._finish_body()
        self._current = self.items.setdefault(name, ItemRecord(name))
        self._mode = "stderr"

    def end(self, name: str, exit_code: int, duration_ms: int) -> None:
        opened = self._close is not None
        self._finish_body()
        rec = self.items.setdefault(name, ItemRecord(name))
        if exit_code == 0 and not opened and not rec.bytes and not name.endswith(TAR_SUFFIX):
            path = self.root / _safe_rel(name)  # an empty result is still a result
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()
        rec.exit_code = exit_code
        rec.duration_s = round(duration_ms / 1000, 3)
        if self._stderr:
            rec.stderr = self.redactor.text(b"".join(self._stderr).decode("utf-8", "replace"))
            self._stderr = []
        self._current = None

    def meta(self, key: str, value: str) -> None:
        self.node_facts[key] = value

    def done(self) -> None:
        self._finish_body()
        self.complete = True

    def close(self) -> None:
        """Flush whatever is open (a stream that ended early leaves an item unfinished)."""
        self._finish_body()

    # -- writing -------------------------------------------------------------------------

    def _open(self, name: str) -> None:
        rel = _safe_rel(name)
        if name.endswith(TAR_SUFFIX):
            target = self.root / _unpack_dir(rel)
            target.mkdir(parents=True, exist_ok=True)
            since = float(self.node_facts.get("since", "0") or 0)
            strip = 1 if rel.name == "ray-logs.tar" else 0  # docker cp puts everything in logs/
            self._unpacker = TarUnpacker(target, self.redactor, strip=strip, since=since)
            self._feed = self._unpacker.feed
            self._close = self._unpacker.close
            return
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(path, "wb")  # noqa: SIM115 - closed in _finish_body
        self._fh = fh
        writer = self.redactor.writer(fh.write)
        self._feed = writer.feed

        def close() -> None:
            writer.close()
            fh.close()

        self._close = close

    def _finish_body(self) -> None:
        if self._close is not None:
            self._close()
        if self._unpacker is not None and self._current is not None:
            up = self._unpacker
            if up.error:
                self._current.notes.append(up.error)
            self._current.notes.extend(f"skipped {s}" for s in up.skipped[:20])
        self._unpacker = None
        self._feed = None
        self._close = None
        self._fh = None


def _unpack_dir(rel: PurePosixPath) -> PurePosixPath:
    """`containers/X/ray-logs.tar` -> `containers/X/ray`; `dgxcluster-logs.tar` -> `dgxcluster`."""
    stem = rel.name[: -len(TAR_SUFFIX)]
    if stem == "ray-logs":
        stem = "ray"
    elif stem == "dgxcluster-logs":
        stem = "dgxcluster"
    return rel.parent / stem
