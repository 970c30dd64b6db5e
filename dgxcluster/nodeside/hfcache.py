"""Node-side helper for `dgxcluster model` (Python 3 standard library only; shipped to nodes,
run as `python3 nodeside-<hash>.pyz hfcache MODE ...`).

  scan    describe HF cache entries: blobs (with stat), links, small files, refs, partial
          files, free space, and this node's verification record; JSON on stdout.
  verify  hash blobs in place against their names and record the results (peers may drop
          the bad ones so they are sent again).
  send    write the listed paths of one entry to stdout as a stream of framed entries,
          hashing every blob as it is read (the source is verified as a by-product).
  recv    read that stream from stdin: each blob goes to a temporary name, is hashed while
          written, and is moved into place only if it matches its name. Links and refs are
          replaced atomically, refs last and only if everything before them landed.

Why a frame format of our own and not tar: both ends are this file, so one pass can hash
and place each blob, path checks are explicit, and there are no long-name or PAX cases.

Blob names are content hashes: 64 hex digits are the sha256 of the file (large/LFS files),
40 hex digits its git blob sha1 (small files). A blob is *verified* on a node when the
record holds a passing hash check made while the file had its current size, mtime, ctime
and inode; any change to the file (even one restoring the mtime) changes its ctime and so
makes it unverified again.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import fcntl
import hashlib
import json
import os
import re
import stat
import sys
import time
from collections.abc import Iterator
from typing import Any, BinaryIO

from . import framing

Json = dict[str, Any]
CHUNK = framing.CHUNK
MAGIC = b"DGXM1\n"
TMP_SUFFIX = ".dgxc-incoming"
PARTIAL_SUFFIXES = (TMP_SUFFIX, ".incomplete")
TOP = ("blobs", "snapshots", "refs", ".no_exist")
SMALL = 1 << 20
SHA256_RE = re.compile(r"[0-9a-f]{64}")
SHA1_RE = re.compile(r"[0-9a-f]{40}")
EXIT_BUSY = 75


class Fail(Exception):
    pass


def _out(obj: object) -> None:
    sys.stdout.write(json.dumps(obj, sort_keys=True) + "\n")
    sys.stdout.flush()


def _stat_key(st: os.stat_result) -> list[int]:
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


# -- hashing ---------------------------------------------------------------------------

def scheme(name: str) -> str:
    if SHA256_RE.fullmatch(name):
        return "sha256"
    if SHA1_RE.fullmatch(name):
        return "git-sha1"
    return "size"


class Hasher:
    def __init__(self, name: str, size: int) -> None:
        self.scheme = scheme(name)
        self.h = hashlib.sha256() if self.scheme != "git-sha1" else hashlib.sha1()  # noqa: S324
        if self.scheme == "git-sha1":
            self.h.update(b"blob %d\0" % size)

    def update(self, data: bytes | memoryview) -> None:
        if self.scheme != "size":
            self.h.update(data)

    def matches(self, name: str) -> tuple[bool, str]:
        if self.scheme == "size":
            return True, ""
        actual = self.h.hexdigest()
        return actual == name, actual


def hash_file(path: str, name: str) -> tuple[bool, str, list[int]]:
    with open(path, "rb") as fh:
        before = os.fstat(fh.fileno())
        h = Hasher(name, before.st_size)
        buf = bytearray(CHUNK)
        view = memoryview(buf)
        while True:
            n = fh.readinto(buf)
            if not n:
                break
            h.update(view[:n])
        after = os.fstat(fh.fileno())
    ok, actual = h.matches(name)
    if _stat_key(before) != _stat_key(after):
        raise Fail(f"{name} changed while it was being hashed")
    return ok, actual, _stat_key(after)


# -- records ---------------------------------------------------------------------------

class Record:
    """This node's verification results for one entry, kept under the cluster's state dir."""

    def __init__(self, records: str, repo: str) -> None:
        self.path = os.path.join(records, repo + ".json")
        self.lock_path = os.path.join(records, repo + ".lock")
        self.records = records
        self.repo = repo
        self._lock_fd: int | None = None
        self._pending: Json = {}
        self._flushed = time.monotonic()

    def lock(self, wait: bool) -> None:
        os.makedirs(self.records, mode=0o700, exist_ok=True)
        fd = os.open(self.lock_path, os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                sys.stderr.write("another dgxcluster model operation is writing this model here\n")
                sys.exit(EXIT_BUSY)
            raise
        self._lock_fd = fd

    def unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def load(self) -> Json:
        try:
            with open(self.path, encoding="utf-8") as fh:
                data = json.load(fh)
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def update(self, hub: str, results: Json) -> None:
        """Merge {blob: entry or None (forget)} into the record, atomically."""
        if not results:
            return
        data = self.load()
        if data.get("hub") != hub:
            data = {}
        old = data.get("blobs")
        blobs: Json = old if isinstance(old, dict) else {}
        for name, entry in results.items():
            if entry is None:
                blobs.pop(name, None)
            else:
                blobs[name] = entry
        data = {"version": 1, "hub": hub, "repo": self.repo, "blobs": blobs}
        tmp = f"{self.path}.tmp-{os.getpid()}"
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(data, fh, sort_keys=True)
        os.replace(tmp, self.path)


    def note(self, hub: str, name: str, entry: Json, size: int = 0) -> None:
        """Queue a result; written after each large blob, else in batches (a killed receiver
        loses at most one batch of small blobs, which are simply hashed again next time)."""
        self._pending[name] = entry
        if size >= 1 << 24 or len(self._pending) >= 64 or time.monotonic() - self._flushed > 2:
            self.flush(hub)

    def flush(self, hub: str) -> None:
        pending, self._pending = self._pending, {}
        self.update(hub, pending)
        self._flushed = time.monotonic()


def _entry(ok: bool, actual: str, key: list[int], name: str) -> Json:
    e: Json = {"ok": ok, "stat": key, "scheme": scheme(name), "at": int(time.time())}
    if not ok:
        e["actual"] = actual
    return e


# -- scan ------------------------------------------------------------------------------

def _small_sha(path: str, size: int) -> str | None:
    if size > SMALL:
        return None
    with open(path, "rb") as fh:
        return hashlib.sha256(fh.read()).hexdigest()


def scan_repo(root: str) -> Json:
    blobs: Json = {}
    partial: Json = {}
    links: Json = {}
    files: Json = {}
    odd: list[str] = []
    refs: Json = {}
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        rel_dir = "" if rel_dir == "." else rel_dir
        for d in list(dirnames):
            if os.path.islink(os.path.join(dirpath, d)):
                filenames.append(d)
                dirnames.remove(d)
        for f in filenames:
            full = os.path.join(dirpath, f)
            rel = f"{rel_dir}/{f}" if rel_dir else f
            try:
                st = os.lstat(full)
            except FileNotFoundError:
                continue
            if rel_dir == "blobs" and stat.S_ISREG(st.st_mode):
                if f.endswith(PARTIAL_SUFFIXES):
                    partial[f] = st.st_size
                else:
                    blobs[f] = _stat_key(st)
            elif stat.S_ISLNK(st.st_mode) and rel_dir != "blobs":
                links[rel] = os.readlink(full)
            elif stat.S_ISREG(st.st_mode) and rel_dir != "blobs" and rel_dir:
                files[rel] = [st.st_size, _small_sha(full, st.st_size)]
                if rel.startswith("refs/") and st.st_size <= 256:
                    with open(full, encoding="utf-8", errors="replace") as fh:
                        refs[rel[5:]] = fh.read().strip()
            else:
                odd.append(rel)
    return {"blobs": blobs, "partial": partial, "links": links, "files": files, "refs": refs,
            "odd": odd}


def cmd_scan(a: argparse.Namespace) -> int:
    hub = a.hub
    out: Json = {"hub": hub, "hub_exists": os.path.isdir(hub), "repos": {}}
    probe = hub
    while not os.path.isdir(probe) and probe not in ("/", ""):
        probe = os.path.dirname(probe)
    vfs = os.statvfs(probe or "/")
    out["free_bytes"] = vfs.f_bavail * vfs.f_frsize
    if out["hub_exists"]:
        names = a.repo or sorted(n for n in os.listdir(hub) if n.startswith("models--"))
        for name in names:
            root = os.path.join(hub, name)
            if not os.path.isdir(root) or os.path.islink(root):
                continue
            entry = scan_repo(root)
            entry["record"] = Record(a.records, name).load()
            out["repos"][name] = entry
    _out(out)
    return 0


# -- verify ----------------------------------------------------------------------------

def cmd_verify(a: argparse.Namespace) -> int:
    rec = Record(a.records, a.repo)
    rec.lock(wait=False)
    blobs_dir = os.path.join(a.hub, a.repo, "blobs")
    results: Json = {}
    report: Json = {}
    try:
        for name in json.load(sys.stdin)["blobs"]:
            path = os.path.join(blobs_dir, _plain(name))
            try:
                ok, actual, key = hash_file(path, name)
            except FileNotFoundError:
                results[name] = None
                report[name] = {"missing": True}
                continue
            except (Fail, OSError) as exc:
                report[name] = {"error": str(exc)}
                continue
            if not ok and a.remove_bad:
                os.unlink(path)
                results[name] = None
                report[name] = {"ok": False, "actual": actual, "removed": True}
                continue
            results[name] = _entry(ok, actual, key, name)
            report[name] = {"ok": ok, "actual": actual}
        rec.update(a.hub, results)
    finally:
        rec.unlock()
    _out({"verified": report})
    return 0


def _plain(name: str) -> str:
    if not name or "/" in name or name in (".", "..") or "\0" in name:
        raise Fail(f"bad blob name {name!r}")
    return name


# -- stream format ---------------------------------------------------------------------

def _write_header(out: BinaryIO, meta: Json) -> None:
    out.write(framing.record(meta))


def cmd_send(a: argparse.Namespace) -> int:
    root = os.path.join(a.hub, a.repo)
    with open(a.list, encoding="utf-8") as fh:
        paths = json.load(fh)["paths"]
    with contextlib.suppress(OSError):
        os.unlink(a.list)  # one use only
    _bigger_pipe(1)
    known = Record(a.records, a.repo).load().get("blobs") or {}
    out = sys.stdout.buffer
    out.write(MAGIC)
    results: Json = {}
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    for rel in paths:
        full = os.path.join(root, check_rel(rel))
        st = os.lstat(full)
        if stat.S_ISLNK(st.st_mode):
            _write_header(out, {"path": rel, "kind": "link", "target": os.readlink(full)})
            continue
        if not stat.S_ISREG(st.st_mode):
            raise Fail(f"{rel} is not a file or a link")
        is_blob = rel.startswith("blobs/")
        name = rel[6:]
        with open(full, "rb") as fh:
            before = os.fstat(fh.fileno())
            size = before.st_size
            _write_header(out, {"path": rel, "kind": "file", "size": size,
                                "mtime_ns": before.st_mtime_ns, "mode": before.st_mode & 0o777})
            old = known.get(name) if is_blob else None
            vouched = isinstance(old, dict) and old.get("ok") and old.get("stat") == _stat_key(before)
            h = Hasher(name, size) if is_blob and not vouched else None
            left = size
            while left:
                n = fh.readinto(buf)
                if not n:
                    raise Fail(f"{rel} shrank while being sent")
                n = min(n, left)
                if h is not None:
                    h.update(view[:n])
                out.write(view[:n])
                left -= n
            after = os.fstat(fh.fileno())
        if h is not None and _stat_key(before) == _stat_key(after):
            ok, actual = h.matches(name)
            results[name] = _entry(ok, actual, _stat_key(after), name)
            if not ok:
                sys.stderr.write(f"source blob {name} does not match its name (sha {actual})\n")
    _write_header(out, {"kind": "end"})
    out.flush()
    rec = Record(a.records, a.repo)
    rec.lock(wait=True)
    try:
        rec.update(a.hub, results)
    finally:
        rec.unlock()
    return 0


def check_rel(rel: str) -> str:
    """A path inside one cache entry: relative, normalised, under a known top directory."""
    if not isinstance(rel, str) or not rel or "\0" in rel or rel.startswith("/"):
        raise Fail(f"bad path {rel!r}")
    parts = rel.split("/")
    if any(p in ("", ".", "..") for p in parts) or parts[0] not in TOP or len(parts) < 2:
        raise Fail(f"bad path {rel!r}")
    if parts[0] == "blobs" and (len(parts) != 2 or parts[1].endswith(PARTIAL_SUFFIXES)):
        raise Fail(f"bad blob path {rel!r}")
    return rel


def _link_inside(rel: str, target: str) -> str:
    """Where a link at `rel` points, relative to the entry root; refuses anything outside."""
    if target.startswith("/") or "\0" in target:
        raise Fail(f"link {rel} -> {target!r} leaves the cache entry")
    resolved = os.path.normpath(os.path.join(os.path.dirname(rel), target))
    if resolved.startswith("..") or resolved.startswith("/"):
        raise Fail(f"link {rel} -> {target!r} leaves the cache entry")
    return resolved


class Reader:
    """Reads the stream from a pipe without a copy per chunk (readinto a reused buffer)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buf = bytearray(CHUNK)
        self.view = memoryview(self.buf)

    def _read_into(self, view: memoryview) -> int:
        return os.readv(self.fd, [view])

    def _fill(self, view: memoryview) -> None:
        try:
            framing.fill(self._read_into, view)
        except framing.Truncated:
            raise Fail("stream ended early") from None

    def exact(self, n: int) -> bytes:
        out = bytearray(n)
        self._fill(memoryview(out))
        return bytes(out)

    def chunks(self, size: int) -> Iterator[memoryview]:
        left = size
        while left:
            view = self.view[: min(left, CHUNK)]
            self._fill(view)
            left -= len(view)
            yield view

    def header(self) -> Json:
        try:
            return framing.read_record(self._read_into)
        except framing.Truncated:
            raise Fail("stream ended early") from None
        except ValueError as exc:
            raise Fail(f"bad header: {exc}") from None


def _bigger_pipe(fd: int) -> None:
    with contextlib.suppress(OSError, AttributeError):
        fcntl.fcntl(fd, getattr(fcntl, "F_SETPIPE_SZ", 1031), CHUNK)


def _replace_link(full: str, target: str) -> None:
    tmp = full + TMP_SUFFIX
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
    os.symlink(target, tmp)
    os.replace(tmp, full)


def cmd_recv(a: argparse.Namespace) -> int:
    root = os.path.join(a.hub, a.repo)
    rec = Record(a.records, a.repo)
    rec.lock(wait=False)
    blobs_dir = os.path.join(root, "blobs")
    os.makedirs(blobs_dir, exist_ok=True)
    for f in os.listdir(blobs_dir):  # leftovers of an interrupted receive (we hold the lock)
        if f.endswith(TMP_SUFFIX):
            os.unlink(os.path.join(blobs_dir, f))
    _bigger_pipe(0)
    rd = Reader(0)
    if rd.exact(len(MAGIC)) != MAGIC:
        raise Fail("not a dgxcluster model stream")
    summary: Json = {"written": 0, "bytes": 0, "bad": {}, "skipped": []}
    trouble = False
    try:
        while True:
            meta = rd.header()
            kind = meta.get("kind")
            if kind == "end":
                break
            rel = check_rel(meta["path"])
            full = os.path.join(root, rel)
            os.makedirs(os.path.dirname(full), exist_ok=True)
            if kind == "link":
                target = str(meta["target"])
                resolved = _link_inside(rel, target)
                if not os.path.exists(os.path.join(root, resolved)):
                    summary["skipped"].append(rel)  # never leave a dangling link
                    trouble = True
                    continue
                _replace_link(full, target)
                summary["written"] += 1
            elif kind == "file":
                if rel.startswith("refs/") and trouble:
                    summary["skipped"].append(rel)  # a ref only once its snapshot landed
                    _drain(rd, int(meta["size"]))
                    continue
                ok = _recv_file(rd, a.hub, rec, root, rel, meta, summary)
                trouble = trouble or not ok
            else:
                raise Fail(f"unknown entry kind {kind!r}")
    finally:
        rec.flush(a.hub)
        rec.unlock()
    _out(summary)
    return 0


def _drain(rd: Reader, size: int) -> None:
    for _ in rd.chunks(size):
        pass


def _recv_file(rd: Reader, hub: str, rec: Record, root: str, rel: str, meta: Json,
               summary: Json) -> bool:
    size = int(meta["size"])
    is_blob = rel.startswith("blobs/")
    name = rel[6:]
    full = os.path.join(root, rel)
    tmp = full + TMP_SUFFIX
    h = Hasher(name, size) if is_blob else None
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for data in rd.chunks(size):
            if h is not None:
                h.update(data)
            _write_all(fd, data)
        os.fchmod(fd, int(meta.get("mode", 0o644)) & 0o755 | 0o400)
    finally:
        os.close(fd)
    mtime = int(meta.get("mtime_ns", time.time_ns()))
    os.utime(tmp, ns=(mtime, mtime))
    summary["bytes"] += size
    if h is not None:
        ok, actual = h.matches(name)
        if not ok:
            os.unlink(tmp)
            summary["bad"][name] = actual
            rec.note(hub, name, {"ok": False, "actual": actual, "stat": None,
                                 "scheme": h.scheme, "at": int(time.time())})
            return False
    os.replace(tmp, full)
    summary["written"] += 1
    if is_blob:
        key = _stat_key(os.stat(full))
        rec.note(hub, name, _entry(True, "", key, name), size)
    return True


def _write_all(fd: int, view: memoryview) -> None:
    while view:
        n = os.write(fd, view)
        view = view[n:]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="dgxcluster-model-agent")
    sub = p.add_subparsers(dest="mode", required=True)
    for mode in ("scan", "verify", "send", "recv"):
        s = sub.add_parser(mode)
        s.add_argument("--hub", required=True)
        s.add_argument("--records", required=True)
        if mode == "scan":
            s.add_argument("--repo", action="append", default=[])
        else:
            s.add_argument("--repo", required=True)
        if mode == "verify":
            s.add_argument("--remove-bad", action="store_true")
        if mode == "send":
            s.add_argument("--list", required=True)
    a = p.parse_args(argv)
    for r in a.repo if isinstance(a.repo, list) else [a.repo]:
        if not r.startswith("models--") or "/" in r or r in (".", ".."):
            p.error(f"bad repo folder {r!r}")
    fn = {"scan": cmd_scan, "verify": cmd_verify, "send": cmd_send, "recv": cmd_recv}[a.mode]
    try:
        return fn(a)
    except Fail as exc:
        sys.stderr.write(f"model-agent {a.mode}: {exc}\n")
        return 2
    except BrokenPipeError:
        sys.stderr.write(f"model-agent {a.mode}: the stream was closed\n")
        return 3
    except OSError as exc:
        sys.stderr.write(f"model-agent {a.mode}: {exc}\n")
        return 2
