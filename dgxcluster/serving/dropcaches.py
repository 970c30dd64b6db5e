"""`start --drop-caches`: free the page cache on every node before the preflight reads memory.

On a DGX Spark the page cache (model files just read, an image just loaded) sits in the
memory the GPU shares; the kernel counts it as available, but CUDA's free memory, which
vLLM's start-up check reads, does not, and community setups drop caches before serving.
Writing `3` to `/proc/sys/vm/drop_caches` (proc(5): page cache, dentries and inodes; `sync`
first so dirty pages can go) needs root: as root directly, else through `sudo -n` (never a
password prompt); a node with neither fails the preflight naming the fix.
"""

from __future__ import annotations

from dgxcluster.core import docker
from dgxcluster.core.steps import Status
from dgxcluster.core.units import human_bytes
from dgxcluster.errors import StepError
from dgxcluster.facts import ParseError, meminfo
from dgxcluster.remote.command import shell
from dgxcluster.remote.connection import Connection

STEP = "drop-caches"
MARK = "--dgxcluster--"
# meminfo, then the drop (as root, else sudo -n, else say so), then meminfo again
_SCRIPT = (
    f'"$@"; echo "{MARK}"; '
    'if [ "$(id -u)" = 0 ]; then sync && echo 3 > /proc/sys/vm/drop_caches && echo "as root"; '
    'elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then '
    'sync && echo 3 | sudo -n tee /proc/sys/vm/drop_caches >/dev/null && echo "through sudo"; '
    'else echo "no root"; fi; '
    f'echo "{MARK}"; "$@"'
)
FIX = ("connect as root (ssh.user), give that user passwordless sudo for "
       "`tee /proc/sys/vm/drop_caches`, or start without --drop-caches")


def argv() -> list[str]:
    return shell(_SCRIPT, *meminfo.ARGV)


def judge(node: str, exit_code: int, stdout: str, stderr: str) -> tuple[Status, str]:
    """(CHANGED, what it freed) or raises StepError naming the node and the fix."""
    parts = stdout.split(MARK + "\n")
    how = parts[1].strip() if len(parts) == 3 else ""
    if how == "no root":
        raise StepError(STEP, f"--drop-caches needs root or passwordless sudo, and the SSH user "
                        f"has neither; fix: {FIX}", node)
    if exit_code != 0 or how not in ("as root", "through sudo"):
        why = (stderr.strip().splitlines() or [how or f"exit {exit_code}"])[-1]
        raise StepError(STEP, f"could not drop the page cache: {why}; fix: {FIX}", node)
    try:
        before, after = meminfo.parse(parts[0]), meminfo.parse(parts[2])
    except ParseError:
        return Status.CHANGED, f"dropped the page cache ({how})"
    if before.cached_bytes is None or after.cached_bytes is None:
        return Status.CHANGED, f"dropped the page cache ({how})"
    return Status.CHANGED, (f"dropped the page cache ({how}): cached "
                            f"{human_bytes(before.cached_bytes, binary=True)} -> "
                            f"{human_bytes(after.cached_bytes, binary=True)}")


def drop(conn: Connection) -> tuple[Status, str]:
    res = conn.run(argv(), timeout=docker.QUICK_S * 4)
    return judge(conn.node, res.exit_code, res.stdout, res.stderr)
