"""Node-side filter (Python 3 standard library only; shipped to the source node by `build`).

Runs `docker save IMAGE` and passes its tar through, leaving out the layer tarballs whose
diffIDs every receiving node already holds. `docker load` never opens the file of a layer it
already has (it looks layers up by chain ID first), so a changed entrypoint on a 35 GB image
ships kilobytes instead of the whole base again.

Layer members are recognised as `blobs/sha256/<hex>` (Docker >= 25: the name is the digest,
decided at once) or `<v1 id>/layer.tar` (older Docker: the digest is only known once read,
so the member is spooled while it is hashed, then sent or dropped).

  python3 nodeside-<hash>.pyz layerfilter --skip sha256:<hex> [--skip ...] [--spool-dir DIR] \
      -- docker save REF
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from typing import IO

BLOCK = 512
CHUNK = 1 << 20
SPOOL_IN_MEMORY = 64 << 20
_OCI_BLOB = re.compile(r"^(?:\./)?blobs/sha256/([0-9a-f]{64})$")
_LEGACY_LAYER = re.compile(r"^(?:\./)?[0-9a-f]{64}/layer\.tar$")


def _read_exact(src: IO[bytes], n: int) -> bytes:
    parts = []
    while n > 0:
        data = src.read(min(n, CHUNK))
        if not data:
            raise EOFError("tar stream ended early")
        parts.append(data)
        n -= len(data)
    return b"".join(parts)


def _copy(src: IO[bytes], dst: IO[bytes] | None, n: int, h: hashlib._Hash | None = None) -> None:
    while n > 0:
        data = src.read(min(n, CHUNK))
        if not data:
            raise EOFError("tar stream ended early")
        if h is not None:
            h.update(data)
        if dst is not None:
            dst.write(data)
        n -= len(data)


def _field(hdr: bytes, start: int, length: int) -> bytes:
    return hdr[start:start + length].split(b"\0", 1)[0]


def _size(hdr: bytes) -> int:
    raw = hdr[124:136]
    if raw[0] & 0x80:  # base-256 (GNU) for huge members
        return int.from_bytes(raw[1:], "big")
    text = raw.split(b"\0", 1)[0].strip()
    return int(text, 8) if text else 0


def _name(hdr: bytes) -> str:
    name = _field(hdr, 0, 100).decode("utf-8", "replace")
    if hdr[257:262] == b"ustar":
        prefix = _field(hdr, 345, 155).decode("utf-8", "replace")
        if prefix:
            name = f"{prefix}/{name}"
    return name


def _pax_path(data: bytes) -> str | None:
    for rec in data.split(b"\n"):
        _, _, kv = rec.partition(b" ")
        key, _, value = kv.partition(b"=")
        if key == b"path":
            return value.decode("utf-8", "replace")
    return None


def _padded(n: int) -> int:
    return (n + BLOCK - 1) // BLOCK * BLOCK


def filter_tar(src: IO[bytes], dst: IO[bytes], skip: set[str], spool_dir: str | None) -> tuple[int, int]:
    """Copy the tar from src to dst without the skipped layers; (layers skipped, bytes skipped)."""
    skipped = skipped_bytes = 0
    pending = b""  # extended headers that belong to the next member
    long_name: str | None = None
    while True:
        hdr = src.read(BLOCK)
        if len(hdr) < BLOCK:
            dst.write(pending + hdr)
            break
        if hdr == b"\0" * BLOCK:  # end of archive: pass the rest through untouched
            dst.write(pending + hdr)
            shutil.copyfileobj(src, dst, CHUNK)
            break
        size = _size(hdr)
        kind = hdr[156:157]
        if kind in (b"x", b"L", b"g", b"K"):
            data = _read_exact(src, _padded(size))
            if kind == b"x":
                long_name = _pax_path(data[:size]) or long_name
            elif kind == b"L":
                long_name = data[:size].split(b"\0", 1)[0].decode("utf-8", "replace")
            pending += hdr + data
            continue
        name = long_name or _name(hdr)
        long_name = None
        body = _padded(size)
        if kind in (b"0", b"\0") and (m := _OCI_BLOB.match(name)):
            if f"sha256:{m.group(1)}" in skip:
                _copy(src, None, body)
                skipped, skipped_bytes, pending = skipped + 1, skipped_bytes + size, b""
                continue
        elif kind in (b"0", b"\0") and _LEGACY_LAYER.match(name) and skip:
            h = hashlib.sha256()
            with tempfile.SpooledTemporaryFile(SPOOL_IN_MEMORY, dir=spool_dir) as spool:
                _copy(src, spool, size, h)
                pad = _read_exact(src, body - size)
                if f"sha256:{h.hexdigest()}" in skip:
                    skipped, skipped_bytes, pending = skipped + 1, skipped_bytes + size, b""
                    continue
                dst.write(pending + hdr)
                pending = b""
                spool.seek(0)
                shutil.copyfileobj(spool, dst, CHUNK)
                dst.write(pad)
            continue
        dst.write(pending + hdr)
        pending = b""
        _copy(src, dst, body)
    return skipped, skipped_bytes


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="dgxcluster-layer-filter")
    p.add_argument("--skip", action="append", default=[])
    p.add_argument("--spool-dir", default=None)
    p.add_argument("command", nargs=argparse.REMAINDER)
    a = p.parse_args(argv)
    cmd = a.command[1:] if a.command[:1] == ["--"] else a.command
    if not cmd:
        p.error("a command is required after --")
    if a.spool_dir:
        os.makedirs(a.spool_dir, exist_ok=True)
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    child = subprocess.Popen(cmd, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
    assert child.stdout is not None
    out = sys.stdout.buffer
    try:
        n, nbytes = filter_tar(child.stdout, out, set(a.skip), a.spool_dir)
        out.flush()
    except (EOFError, OSError) as exc:
        child.kill()
        child.wait()
        sys.stderr.write(f"layer filter: {exc}\n")
        return 1
    rc = child.wait()
    sys.stderr.write(f"layer filter: left out {n} layer(s), {nbytes} bytes the receivers hold\n")
    return rc
