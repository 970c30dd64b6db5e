"""One checker for what a fault may leave behind on a testbed's nodes.

After a fault and whatever dgxcluster does about it, each node must hold none of:
- dgxcluster containers (by the `dgxcluster.cluster` label, or named `dgxc-*`), any state;
- processes beyond the node's own daemons (sshd's listener, dockerd, containerd, and the
  fault switch `hang` itself): a leftover `docker build`, relay or model agent, lock shell,
  Ray or vLLM shows up here (`scripts/testbed ps`: nodes share the host's PID namespace);
- env-files: anything in `<state_dir>/<cluster>/env` (start's 0600 env-files, build's
  BuildKit secret files, model pull's token file);
- temporary files: `*.tmp-*` from atomic SFTP puts, anything in `<state_dir>/<cluster>/tmp`;
- a held cluster lock (its abstract UNIX socket `@dgxcluster/<cluster>/lock` listening in
  the node's network namespace, `/proc/net/unix`).

Processes that are ending (a `docker build` that notices its client is gone at its next
write) get `wait_s` to go; anything still there then is a leak.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tests.conftest import Testbed

STATE = "/root/.local/state/dgxcluster"

#: The node's own processes, always there on a testbed node.
_BASELINE = re.compile(
    r"^\d+ (sshd: /usr/sbin/sshd -f \S+ .*\[listener\]"
    r"|/usr/sbin/sshd -f "
    r"|dockerd --data-root "
    r"|containerd --config "
    r"|/usr/bin/python3 -c import socket,time)"  # `scripts/testbed hang`
)

_FILES = r"""
root="$1"
if command -v docker >/dev/null 2>&1 && [ -S /run/docker.sock ]; then
  docker ps -a --filter label=dgxcluster.cluster --format 'container {{.Names}} ({{.Status}})' 2>/dev/null
  docker ps -a --format '{{.Names}} {{.Status}}' 2>/dev/null | grep '^dgxc-' | sed 's/^/container /'
fi
for f in "$root"/env/* "$root"/env/.[!.]*; do [ -e "$f" ] && echo "env-file $f"; done
for f in "$root"/tmp/* "$root"/tmp/.[!.]*; do [ -e "$f" ] && echo "temp-file $f"; done
find "$root" /root /tmp -xdev -name '*.tmp-*' 2>/dev/null | sed 's/^/temp-file /'
grep -q " @dgxcluster/$2/lock\$" /proc/net/unix && echo "lock held: @dgxcluster/$2/lock"
true
"""

#: What `clean` removes: the same containers (any state) and files as `_FILES` lists.
_CLEAN = r"""
root="$1"
if command -v docker >/dev/null 2>&1 && [ -S /run/docker.sock ]; then
  ids=$( { docker ps -aq --filter label=dgxcluster.cluster; docker ps -aq --filter name=^dgxc-; } \
        2>/dev/null | sort -u)
  [ -n "$ids" ] && docker rm -f -v $ids >/dev/null 2>&1
fi
rm -rf "$root"/env/* "$root"/env/.[!.]* "$root"/tmp/* "$root"/tmp/.[!.]* 2>/dev/null
find "$root" /root /tmp -xdev -name '*.tmp-*' -delete 2>/dev/null
true
"""

#: The cluster lock (nodeside/clusterlock.py): an abstract UNIX socket while held.
LOCK_HELD = 'grep -q " @dgxcluster/$1/lock$" /proc/net/unix'


def lock_held(tb: Testbed, node: str, cluster: str | None = None) -> bool:
    """Is the cluster lock held on `node` (by anyone)?"""
    return tb.node_exec(node, "sh", "-c", LOCK_HELD, "sh", cluster or tb.name,
                        check=False).returncode == 0


def node_leaks(tb: Testbed, node: str, cluster: str | None = None, state: str = STATE) -> list[str]:
    root = f"{state}/{cluster or tb.name}"
    found = sorted(set(tb.node_exec(node, "sh", "-c", _FILES, "sh", root,
                                    cluster or tb.name).stdout.splitlines()))
    return found + ["process " + proc[:300] for proc in _extra_processes(tb, node)]


def _extra_processes(tb: Testbed, node: str) -> list[str]:
    """The node's processes beyond its own daemons, as `PID CMDLINE`."""
    return [p for p in _processes(tb.tb("ps", node).stdout) if not _BASELINE.match(p)]


def _processes(ps: str) -> list[str]:
    """`scripts/testbed ps` prints `PID CMDLINE`; a command line may span lines (sh -c 'script')."""
    out: list[str] = []
    for line in ps.splitlines():
        if re.match(r"^\d+ ", line) or not out:
            out.append(line)
        else:
            out[-1] += " " + line.strip()
    return [p for p in out if p.strip()]


def leaks(tb: Testbed, cluster: str | None = None, state: str = STATE,
          wait_s: float = 30.0) -> dict[str, list[str]]:
    """Every node's leftovers ({} when clean), after giving ending processes `wait_s`."""
    deadline = time.monotonic() + wait_s
    while True:
        found = {n: node_leaks(tb, n, cluster, state) for n in tb.nodes}
        found = {n: v for n, v in found.items() if v}
        if not found or time.monotonic() > deadline:
            return found
        time.sleep(1.0)


def clean(tb: Testbed, node: str, cluster: str | None = None, state: str = STATE) -> None:
    """Remove what `node_leaks` finds (containers, files, then the processes still left), so
    that one test's leak fails that test only, not every later one on the same testbed."""
    tb.node_exec(node, "sh", "-c", _CLEAN, "sh", f"{state}/{cluster or tb.name}", check=False)
    for proc in _extra_processes(tb, node):
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(proc.split()[0]), signal.SIGKILL)


def assert_no_leaks(tb: Testbed, cluster: str | None = None, state: str = STATE,
                    wait_s: float = 30.0) -> None:
    found = leaks(tb, cluster, state, wait_s)
    for node in found:
        clean(tb, node, cluster, state)
    assert found == {}, "left behind on the nodes (now removed):\n" + "\n".join(
        f"  {n}: {item}" for n, items in found.items() for item in items)
