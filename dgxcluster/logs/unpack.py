"""Unpacks a tar stream from a node into the bundle, redacting every file on the way.

Log folders (Ray's session logs, dgxcluster's own log directory) travel as tar streams so
they need no copy on the node. They are unpacked here rather than kept as archives, so
every byte can be redacted and the bundle reads as plain files. Only regular files and
directories are written, always below the target folder (no links, devices or `..`).
"""

from __future__ import annotations

import os
import tarfile
import threading
from pathlib import Path, PurePosixPath

from dgxcluster.secrets import CollectedRedactor

CHUNK = 1 << 20


class TarUnpacker:
    """Receives tar bytes through `feed` and unpacks them in a thread as they arrive."""

    def __init__(
        self, target: Path, redactor: CollectedRedactor, *, strip: int = 0, since: float = 0
    ) -> None:
        self.target = target
        self.redactor = redactor
        self.strip = strip
        self.since = since
        self.skipped: list[str] = []
        self.error: str | None = None
        self.files = 0
        rfd, self._wfd = os.pipe()
        self._reader = os.fdopen(rfd, "rb", buffering=CHUNK)
        self._broken = False
        self._thread = threading.Thread(target=self._run, daemon=True, name="untar")
        self._thread.start()

    def feed(self, data: bytes) -> None:
        if self._broken:
            return
        try:
            view = memoryview(data)
            while view:
                n = os.write(self._wfd, view)
                view = view[n:]
        except OSError:
            self._broken = True

    def close(self) -> None:
        os.close(self._wfd)
        self._thread.join()

    def _run(self) -> None:
        try:
            with tarfile.open(fileobj=self._reader, mode="r|*") as tar:
                for member in tar:
                    self._member(tar, member)
        except (tarfile.TarError, OSError, EOFError) as exc:
            if not self.files and "empty" in str(exc).lower():
                self.error = "empty archive"
            else:
                self.error = f"could not unpack: {exc}"
        finally:
            self._reader.close()

    def _member(self, tar: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        rel = self._relative(member.name)
        if rel is None:
            return
        if member.isdir():
            (self.target / rel).mkdir(parents=True, exist_ok=True)
            return
        if not member.isfile():
            self.skipped.append(f"{rel} (not a regular file)")
            return
        if self.since and member.mtime < self.since:
            return
        src = tar.extractfile(member)
        if src is None:  # pragma: no cover - isfile() members always have data
            return
        dest = self.target / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        with open(dest, "wb") as out:
            writer = self.redactor.writer(out.write)
            while chunk := src.read(CHUNK):
                writer.feed(chunk)
            writer.close()
        self.files += 1

    def _relative(self, name: str) -> PurePosixPath | None:
        parts = [p for p in PurePosixPath(name).parts if p not in ("", ".")]
        if name.startswith("/") or ".." in parts:
            self.skipped.append(f"{name} (unsafe path)")
            return None
        parts = parts[self.strip :]
        if not parts:
            return None
        return PurePosixPath(*parts)
