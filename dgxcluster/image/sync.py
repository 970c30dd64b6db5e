"""Keep a copy of the build context on each node, sending only what changed (like rsync).

Each node keeps `<state>/<cluster>/build/<image>/context/` and a `manifest.json` describing
it (path, type, mode, size, mtime, sha256). A node's file is trusted only while what `find`
lists on the node (type, mode, size, mtime) still matches its manifest entry, so a copy
edited by hand on the node is re-sent rather than built. Changed files travel as one tar on
the SSH channel's stdin, the manifest last; the same remote command then runs `docker build`,
under a per-directory `flock` so two builds never share a context directory.
"""

from __future__ import annotations

import contextlib
import json
import os
import tarfile
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dgxcluster.core.buildcontext import BuildContext, ContextFile
from dgxcluster.core.units import human_bytes
from dgxcluster.image.probe import RemoteFile
from dgxcluster.remote.command import shell

MANIFEST_VERSION = 1

#: $1 build dir (absolute), $2 number of paths to delete, $3 secret dir to remove afterwards
#: ("" = none; `<env>/build-<image slug>-<random>`), $4 the image ref being built, then the
#: paths to delete, then the docker build argv. stdin: the tar. Ends by printing the built
#: image's ID as `docker image inspect` reports it (the same ID the probe and the finalize
#: step compare).
#: While docker builds, a watchdog writes an empty line to stderr every 2 s: once the
#: client is gone (Ctrl-C, a killed sshd) that write fails, and the build is stopped rather
#: than left running for the rest of its step, holding the context lock and the secrets.
SCRIPT = r"""dir=$1 ndel=$2 sdir=$3 ref=$4 bpid=
shift 4
cleanup() {
  [ -z "$bpid" ] || kill -TERM "$bpid" 2>/dev/null
  [ -z "$sdir" ] || rm -rf -- "$sdir"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP PIPE
mkdir -p "$dir/context" || exit 70
exec 9>"$dir/lock" || exit 70
if ! flock -n 9; then echo "dgxcluster: another build is using $dir on this node" >&2; exit 75; fi
# secret dirs of earlier builds of this image that never finished (a node that stopped
# answering while they were written): only a build holding this lock may remove them
if [ -n "$sdir" ]; then for d in "${sdir%-*}"-*; do [ "$d" = "$sdir" ] || rm -rf -- "$d"; done; fi
cd "$dir/context" || exit 70
while [ "$ndel" -gt 0 ]; do rm -f -- "$1"; shift; ndel=$((ndel - 1)); done
find . -mindepth 1 -depth -type d -empty -delete
if ! tar -x -U -p --no-same-owner -f - -C "$dir"; then
  echo "dgxcluster: the build context did not arrive whole" >&2; exit 70
fi
cd "$dir" || exit 70
echo "dgxcluster: context ready"
"$@" </dev/null &
bpid=$!
(trap '' PIPE; while sleep 2; do printf '\n' >&2 || { kill -TERM "$bpid"; exit 0; }; done) 9>&- &
wpid=$!
wait "$bpid"
rc=$?
bpid=
kill "$wpid" 2>/dev/null
[ "$rc" -ne 0 ] || printf 'dgxcluster-image-id %s\n' "$(docker image inspect --format '{{.Id}}' "$ref")"
exit "$rc"
"""

READY_LINE = "dgxcluster: context ready"
IMAGE_ID_PREFIX = "dgxcluster-image-id "


@dataclass(frozen=True)
class SyncPlan:
    """What one node needs: files to send, stale paths to delete, the manifest afterwards."""

    send: tuple[ContextFile, ...]
    delete: tuple[str, ...]
    manifest: dict[str, Any]
    kept: int

    @property
    def bytes(self) -> int:
        return sum(f.size for f in self.send)

    def describe(self) -> str:
        if not self.send and not self.delete:
            return f"context unchanged ({self.kept} files)"
        text = f"send {len(self.send)} file(s), {human_bytes(self.bytes)}"
        if self.kept:
            text += f"; {self.kept} unchanged"
        if self.delete:
            text += f"; delete {len(self.delete)}"
        return text


def entry(f: ContextFile) -> dict[str, Any]:
    if f.link is not None:
        return {"k": "l", "m": 0o777, "l": f.link, "t": f.mtime}
    return {"k": "f", "m": f.mode, "s": f.size, "t": f.mtime, "h": f.sha256}


def _listing_agrees(e: Mapping[str, Any], rf: RemoteFile) -> bool:
    if e.get("k") != rf.kind:
        return False
    if rf.kind == "l":
        return bool(e.get("l") == rf.link)
    return bool(e.get("m") == rf.mode and e.get("s") == rf.size and e.get("t") == rf.mtime)


def _same_content(e: Mapping[str, Any], f: ContextFile) -> bool:
    if f.link is not None:
        return bool(e.get("k") == "l" and e.get("l") == f.link)
    return bool(e.get("k") == "f" and e.get("h") == f.sha256 and e.get("m") == f.mode)


def plan(ctx: BuildContext, files: Mapping[str, RemoteFile] | None,
         manifest: Mapping[str, Any] | None) -> SyncPlan:
    """Compare the local context with a node's copy (pure)."""
    remote = dict(files or {})
    recorded: Mapping[str, Any] = {}
    if manifest and manifest.get("version") == MANIFEST_VERSION:
        recorded = manifest.get("files") or {}
    trusted = {p: e for p, rf in remote.items()
               if isinstance(e := recorded.get(p), dict) and _listing_agrees(e, rf)}
    send: list[ContextFile] = []
    after: dict[str, Any] = {}
    for f in ctx.files:
        old = trusted.get(f.path)
        if old is not None and _same_content(old, f):
            after[f.path] = old
        else:
            send.append(f)
            after[f.path] = entry(f)
    wanted = {f.path for f in ctx.files}
    delete = tuple(sorted(p for p in remote if p not in wanted))
    return SyncPlan(tuple(send), delete, {"version": MANIFEST_VERSION, "files": after},
                    kept=len(ctx.files) - len(send))


def argv(build_dir: str, plan_: SyncPlan, secret_dir: str, ref: str,
         docker_argv: Sequence[str]) -> list[str]:
    return shell(SCRIPT, build_dir, str(len(plan_.delete)), secret_dir, ref, *plan_.delete,
                 *docker_argv)


class ContextStream:
    """A readable stream of the tar for one node, produced by a thread as it is read.

    Close it once the remote command returns: that unblocks the producer if the node
    stopped reading early (a failed `flock`, a full disk).
    """

    def __init__(self, root: Path, plan_: SyncPlan) -> None:
        r, w = os.pipe()
        self._reader = os.fdopen(r, "rb")
        self._writer = os.fdopen(w, "wb")
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._produce, args=(root, plan_), daemon=True,
                                        name="context-tar")
        self._thread.start()

    def _produce(self, root: Path, plan_: SyncPlan) -> None:
        try:
            with tarfile.open(fileobj=self._writer, mode="w|", format=tarfile.PAX_FORMAT) as tar:
                for f in plan_.send:
                    info = tarfile.TarInfo(f"context/{f.path}")
                    info.mtime = f.mtime
                    if f.link is not None:
                        info.type = tarfile.SYMTYPE
                        info.linkname = f.link
                        info.mode = 0o777
                        tar.addfile(info)
                        continue
                    info.mode = f.mode
                    info.size = f.size
                    with open(root / f.path, "rb") as fh:
                        tar.addfile(info, fh)
                data = json.dumps(plan_.manifest, sort_keys=True).encode()
                info = tarfile.TarInfo("manifest.json")
                info.size = len(data)
                info.mode = 0o600
                tar.addfile(info, _Bytes(data))
        except BaseException as exc:  # reported by the caller; the remote tar sees a short stream
            self.error = exc
        finally:
            with contextlib.suppress(OSError):
                self._writer.close()

    def read(self, n: int = -1) -> bytes:
        return self._reader.read(n)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._reader.close()
        self._thread.join(timeout=5)

    @property
    def producing(self) -> bool:
        """Whether the producer thread still runs (after `close`, it must not)."""
        return self._thread.is_alive()


class _Bytes:
    def __init__(self, data: bytes) -> None:
        self._data = memoryview(data)
        self._pos = 0

    def read(self, n: int = -1) -> bytes:
        end = len(self._data) if n < 0 else min(len(self._data), self._pos + n)
        out = bytes(self._data[self._pos:end])
        self._pos = end
        return out
