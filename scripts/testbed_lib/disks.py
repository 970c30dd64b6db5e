"""A small disk on a node: a tmpfs of a given size over one of its directories, in the node's
own mount namespace (the node's dockerd sees it, so containers mounting that directory do
too). For "disk full" faults: a copy into it stops with ENOSPC part-way. `up` removes them."""

from __future__ import annotations

import re

from testbed_lib.layout import Node
from testbed_lib.sh import TestbedError, run

SIZE_RE = re.compile(r"^[1-9][0-9]*[kmg]?$", re.IGNORECASE)
TAG = "dgxtb-small"  # the tmpfs "device" name: marks ours in mountinfo


def check(path: str, size: str) -> None:
    if not path.startswith("/") or "\n" in path or " " in path:
        raise TestbedError(f"{path!r}: an absolute path inside the node, without spaces")
    if not SIZE_RE.match(size):
        raise TestbedError(f"{size!r}: a size such as 64m or 1g")


def _enter(node: Node) -> list[str]:
    return ["nsenter", f"--mount={node.mnt_ns}", "--"]


def mounted(node: Node) -> list[str]:
    """Our tmpfs mounts on the node, innermost last."""
    out = run([*_enter(node), "cat", "/proc/self/mountinfo"]).stdout
    return [f[4] for f in (ln.split() for ln in out.splitlines())
            if "-" in f and f[f.index("-") + 2] == TAG]


def shrink(node: Node, path: str, size: str) -> None:
    """Mount a `size` tmpfs over `path`, keeping what was there (copied in, if it fits)."""
    check(path, size)
    if path in mounted(node):
        raise TestbedError(f"{node.name}: {path} is already a small disk (`tmpfs NODE PATH off`)")
    script = ('set -e; mkdir -p "$1"; t=$(mktemp -d); cp -a "$1/." "$t/"; '
              f'mount -t tmpfs -o "size=$2,mode=0755" {TAG} "$1"; '
              'cp -a "$t/." "$1/" || echo "dgxtb: what was in $1 does not fit in $2" >&2; '
              'rm -rf "$t"')
    run([*_enter(node), "sh", "-c", script, "sh", path, size], timeout=600)


def restore(node: Node, path: str | None = None) -> list[str]:
    """Unmount our tmpfs at `path` (all of them when None); what was under it is back."""
    done = []
    for target in reversed(mounted(node)):
        if path is None or target == path:
            run([*_enter(node), "umount", "-l", target])
            done.append(target)
    if path is not None and not done:
        raise TestbedError(f"{node.name}: {path} is not a small disk made by the testbed")
    return done
