"""The build context as docker will see it, and the content-addressed tag derived from it.

The tag `<image.name>:ctx-<12 hex>` is a hash of every file docker would receive (path,
mode, content; `.dockerignore` respected), the Dockerfile and the build args. Same inputs,
same tag, on any machine: so "every node already has this tag" means "nothing to build".
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from dgxcluster.core import dockerignore
from dgxcluster.core.naming import CONTENT_TAG_PREFIX
from dgxcluster.errors import UsageError


@dataclass(frozen=True)
class ContextFile:
    path: str  # relative, posix separators
    mode: int
    size: int
    sha256: str
    link: str | None = None
    mtime: int = 0  # not part of the digest; lets a node's copy be checked without hashing it


@dataclass(frozen=True)
class BuildContext:
    root: Path
    dockerfile: str
    files: tuple[ContextFile, ...]
    build_args: tuple[tuple[str, str], ...]

    @property
    def digest(self) -> str:
        h = hashlib.sha256()
        h.update(b"dgxcluster-context-v1\0")
        h.update(f"dockerfile={self.dockerfile}\0".encode())
        for key, value in self.build_args:
            h.update(f"arg={key}={value}\0".encode())
        for f in self.files:
            h.update(f"{f.path}\0{f.mode:o}\0{f.link or ''}\0{f.sha256}\0".encode())
        return h.hexdigest()

    @property
    def content_tag(self) -> str:
        return CONTENT_TAG_PREFIX + self.digest[:12]

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def scan(root: Path, dockerfile: str = "Dockerfile",
         build_args: Mapping[str, str] | None = None) -> BuildContext:
    """Walk the context like `docker build` would (honouring .dockerignore)."""
    if not root.is_dir():
        raise UsageError(f"build context {root} is not a directory", "image.context")
    df = root / dockerfile
    if not df.is_file():
        raise UsageError(f"no Dockerfile at {df}", "image.dockerfile")
    ignore_file = root / ".dockerignore"
    patterns = dockerignore.parse(ignore_file.read_text()) if ignore_file.exists() else []
    always = {dockerfile.replace(os.sep, "/"), ".dockerignore"}
    files: list[ContextFile] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        rel_dir = os.path.relpath(dirpath, root)
        rel_dir = "" if rel_dir == "." else rel_dir.replace(os.sep, "/")
        keep_dirs = []
        for d in sorted(dirnames):
            rel = f"{rel_dir}/{d}" if rel_dir else d
            full = Path(dirpath) / d
            if full.is_symlink():
                filenames.append(d)
                continue
            # a negated pattern may re-include something below an excluded dir: descend anyway
            if dockerignore.excluded(rel, patterns) and not any(p.negated for p in patterns):
                continue
            keep_dirs.append(d)
        dirnames[:] = keep_dirs
        for name in sorted(filenames):
            rel = f"{rel_dir}/{name}" if rel_dir else name
            if dockerignore.excluded(rel, patterns) and rel not in always:
                continue
            full = Path(dirpath) / name
            st = full.lstat()
            if stat.S_ISLNK(st.st_mode):
                files.append(ContextFile(rel, 0o777, 0, "", os.readlink(full), int(st.st_mtime)))
            elif stat.S_ISREG(st.st_mode):
                files.append(ContextFile(rel, st.st_mode & 0o777, st.st_size, _sha256(full),
                                         mtime=int(st.st_mtime)))
    files.sort(key=lambda f: f.path)
    args = tuple(sorted((build_args or {}).items()))
    return BuildContext(root=root, dockerfile=dockerfile, files=tuple(files), build_args=args)

