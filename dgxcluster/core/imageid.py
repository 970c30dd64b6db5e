"""Which image the nodes should run: one answer for `build`, `start`, `status`, `model pull`
and `verify-ib`.

The answer is `<image.name>:ctx-<12 hex>`, the content tag of the local build context
(`core.buildcontext`): same inputs, same tag, on any machine. For `image.source: pull` it is
`<image.name>:pull-<12 hex>`, a hash of the normalised `image.ref` (known without asking a
node); `build` points that tag at the image ID the pull gave on one node and ships those
bytes to the others, so there the image ID is the identity and `compare` checks it too.

Hashing the context (about 110 MB of wheels for the testbed image; more for real ones) on
every `status` or `start` would put that work on the hot path, so the tag is cached per
context folder, keyed by a fingerprint of what the scan reads: every file's path, size,
mtime, inode, mode and link target, the Dockerfile name, the build args, and the code that
computes the tag. Any change gives a fresh scan.

`compare` (pure) says whether nodes that answered hold one content tag (and the expected
one): compare content tags (the `dgxcluster.content-tag` label), not image IDs: `each`
builds the same inputs on every node, which gives equal content tags but different IDs.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from dgxcluster.core.naming import MOVING_TAG, PULL_TAG_PREFIX, is_pull_tag
from dgxcluster.inventory import imageref

if TYPE_CHECKING:
    from dgxcluster.inventory.load import Inventory

CACHE_NAME = "context-tags.json"


@dataclass(frozen=True)
class ImageId:
    """An image as dgxcluster names it: the repository and its content tag."""

    name: str
    content_tag: str
    pulled: str | None = None  # image.source: pull: the reference pulled (image.ref)

    @property
    def ref(self) -> str:
        """`<name>:ctx-<hex>`: what `start`, `model pull` and `verify-ib` run."""
        return f"{self.name}:{self.content_tag}"

    @property
    def moving(self) -> str:
        """`<name>:current`: the newest content tag `build` made on a node."""
        return f"{self.name}:{MOVING_TAG}"


def expected(inv: Inventory, cache: Path | None = None) -> ImageId:
    """The image the inventory's build context gives today (UsageError naming `image.context`
    or `image.dockerfile` when it cannot be read)."""
    img = inv.image
    if img.source == "pull":
        assert img.ref is not None  # the inventory refuses pull without a ref
        return ImageId(img.name, pull_tag(img.ref), img.ref)
    return ImageId(img.name, content_tag(inv.local_path(img.context), img.dockerfile,
                                         inv.build_args, cache))


def pull_tag(ref: str) -> str:
    """`pull-<12 hex>` of the reference docker pulls (spellings docker treats alike, alike)."""
    return PULL_TAG_PREFIX + hashlib.sha256(imageref.parse(ref).pulled.encode()).hexdigest()[:12]


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "dgxcluster"


def fingerprint(root: Path, dockerfile: str, build_args: Mapping[str, str]) -> str:
    """Cheap (stat only) summary of everything `scan` would read."""
    from dgxcluster.core import buildcontext, dockerignore

    h = hashlib.sha256()
    for module in (buildcontext, dockerignore):  # the tag's own recipe
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
    """`scan(root, ...).content_tag`, from the cache when nothing it depends on changed."""
    from dgxcluster.core.buildcontext import scan

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


@dataclass(frozen=True)
class NodeImage:
    """One node's answer. `error` is set (and the rest empty) when it could not be asked."""

    node: str
    wanted_tag: str | None = None  # the content tag asked about (ctx-<hex>), if any
    wanted_present: bool = False
    wanted_id: str | None = None
    current_tag: str | None = None  # content tag label of <image>:current
    current_id: str | None = None
    error: str | None = None
    unreachable: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True)
class Verdict:
    consistent: bool  # every node answered and `current` is the same content tag everywhere
    content_tag: str | None  # that tag, when consistent
    problems: dict[str, str] = field(default_factory=dict)  # node -> why it is not usable

    def explain(self) -> str:
        if self.consistent:
            return f"every node holds {self.content_tag}"
        return "; ".join(f"{n}: {why}" for n, why in sorted(self.problems.items()))


def compare(states: Mapping[str, NodeImage], expected: str | None = None) -> Verdict:
    """Pure: are all nodes on one content tag (and, if given, the expected one)?"""
    if not states:
        return Verdict(False, None, {})
    problems: dict[str, str] = {}
    tags: dict[str, str] = {}
    for node, s in states.items():
        if s.error:
            problems[node] = s.error
        elif s.current_tag is None:
            problems[node] = ("no image built by dgxcluster (run: dgxcluster build)"
                              if s.current_id is None else "`current` has no content-tag label")
        else:
            tags[node] = s.current_tag
    distinct = sorted(set(tags.values()))
    if len(distinct) == 1 and is_pull_tag(distinct[0]):
        problems.update(_pulled_ids(states, tags))
    if len(distinct) > 1:
        for node, tag in tags.items():
            others = ", ".join(t for t in distinct if t != tag)
            problems[node] = f"holds {tag}, others hold {others} (run: dgxcluster build)"
    elif expected and distinct and distinct[0] != expected:
        for node in tags:
            problems[node] = (f"holds {distinct[0]}, the build context is now {expected} "
                              "(run: dgxcluster build)")
    if problems:
        return Verdict(False, None, problems)
    return Verdict(True, distinct[0] if distinct else None)


def _pulled_ids(states: Mapping[str, NodeImage], tags: Mapping[str, str]) -> dict[str, str]:
    """A pulled tag names one image only where every node holds the same image ID (an
    upstream tag that moved, pulled twice, would not)."""
    ids = {node: (states[node].current_id or "?").removeprefix("sha256:")[:12] for node in tags}
    distinct = sorted(set(ids.values()))
    if len(distinct) <= 1:
        return {}
    return {node: f"holds image {i} as {tags[node]}, others hold "
                  f"{', '.join(d for d in distinct if d != i)} (run: dgxcluster build)"
            for node, i in ids.items()}
