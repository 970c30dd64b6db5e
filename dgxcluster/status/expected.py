"""The content tag the inventory's build context gives today, without re-hashing it each time.

`status` compares every node's image with it. Hashing the context (about 110 MB of wheels
for the testbed image; more for real ones) on every `status` would put that work on the
hot path, so the tag is cached per context folder, keyed by a fingerprint of what `scan`
reads: every file's path, size, mtime, inode, mode and link target, the Dockerfile name,
the build args, and the code that computes the tag. Any change gives a fresh scan.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path

CACHE_NAME = "context-tags.json"


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "dgxcluster"


def fingerprint(root: Path, dockerfile: str, build_args: Mapping[str, str]) -> str:
    from dgxcluster.image import context, dockerignore

    h = hashlib.sha256()
    for module in (context, dockerignore):  # the tag's own recipe
        h.update(Path(str(module.__file__)).read_bytes())
    h.update(f"{dockerfile}\0{sorted(build_args.items())}\0".encode())
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames.sort()
        for name in sorted(filenames) + [d for d in dirnames if os.path.islink(
                os.path.join(dirpath, d))]:
            full = os.path.join(dirpath, name)
            st = os.lstat(full)
            link = os.readlink(full) if os.path.islink(full) else ""
            rel = os.path.relpath(full, root)
            h.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_ino}\0{st.st_mode}\0"
                     f"{link}\0".encode())
    return h.hexdigest()


def content_tag(root: Path, dockerfile: str, build_args: Mapping[str, str],
                cache: Path | None = None) -> str:
    """scan(root, ...).content_tag, from the cache when nothing it depends on changed."""
    from dgxcluster.image.context import scan

    if not root.is_dir():
        return scan(root, dockerfile, build_args).content_tag  # raises the usual error
    path = (cache or cache_dir()) / CACHE_NAME
    key = str(root.resolve())
    fp = fingerprint(root, dockerfile, build_args)
    entries: dict[str, dict[str, str]] = {}
    try:
        entries = json.loads(path.read_text())
        hit = entries.get(key, {})
        if hit.get("fingerprint") == fp and hit.get("tag"):
            return hit["tag"]
    except (OSError, ValueError, AttributeError):
        entries = {}
    tag = scan(root, dockerfile, build_args).content_tag
    entries = entries if isinstance(entries, dict) else {}
    entries[key] = {"fingerprint": fp, "tag": tag}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}")
        tmp.write_text(json.dumps(entries, indent=1))
        tmp.replace(path)
    except OSError:
        pass  # a cache we cannot write only costs time
    return tag
