"""`dgxcluster logs --follow`: every dgxcluster container's log, live, from all nodes at once.

One SSH channel per container runs `docker logs -f`. The remote script also watches its
stdin, which the operator holds open: when the operator stops (Ctrl-C), or its connection
drops, stdin reaches EOF and the script kills `docker logs`, so no follower outlives the
command on any node (without a pty, sshd would not signal them).
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from dgxcluster.core.naming import LABEL_ROLE, cluster_filter
from dgxcluster.core.session import Session
from dgxcluster.errors import ConnectError
from dgxcluster.remote.command import shell
from dgxcluster.remote.connection import Connection
from dgxcluster.secrets import CollectedRedactor

#: Lines of history shown per container when no --since is given.
DEFAULT_TAIL = 50
FOREVER_S = 10 * 365 * 86400.0

# $1 container  $2 since (seconds back, 0 = use --tail)  $3 tail lines
FOLLOW = r"""
exec 4<&0
if [ "$2" -gt 0 ]; then docker logs -f --since "${2}s" "$1" 2>&1 </dev/null &
else docker logs -f --tail "$3" "$1" 2>&1 </dev/null &
fi
p=$!
( cat <&4 >/dev/null 2>&1; kill "$p" 2>/dev/null ) &
w=$!
exec 4<&-
wait "$p"; rc=$?
kill "$w" 2>/dev/null
exit "$rc"
"""

LineSink = Callable[[str, str, str], None]  # (node, container label, line)
NoteSink = Callable[[str], None]


@dataclass
class FollowResult:
    unreachable: dict[str, str] = field(default_factory=dict)
    followed: list[tuple[str, str]] = field(default_factory=list)


def list_argv(cluster: str) -> list[str]:
    fmt = '{{.Names}}\t{{.Label "' + LABEL_ROLE + '"}}'
    return ["docker", "ps", "-a", *cluster_filter(cluster), "--format", fmt]


def follow_argv(container: str, since_s: int, tail: int = DEFAULT_TAIL) -> list[str]:
    return shell(FOLLOW, container, str(max(0, since_s)), str(tail))


def follow(
    session: Session,
    nodes: Sequence[str] | None = None,
    *,
    since_s: int = 0,
    on_line: LineSink,
    on_note: NoteSink,
    stop: threading.Event | None = None,
    tail: int = DEFAULT_TAIL,
) -> FollowResult:
    """Follow until `stop` is set or Ctrl-C; then end every remote follower and return."""
    stop = stop or threading.Event()
    targets = session.cluster.select(nodes)
    result = FollowResult()
    listing = session.cluster.run(list_argv(session.inventory.cluster), targets, timeout=30)
    streams: list[tuple[Connection, str, str]] = []
    for name in targets:
        value = listing[name]
        if isinstance(value, ConnectError):
            result.unreachable[name] = value.reason
            on_note(f"{name}: unreachable: {value.reason}")
            continue
        if isinstance(value, BaseException):
            on_note(f"{name}: {value}")
            continue
        if not value.ok:
            on_note(f"{name}: docker ps failed: {value.stderr.strip() or value.exit_code}")
            continue
        found = [ln.split("\t") for ln in value.stdout.splitlines() if ln.strip()]
        if not found:
            on_note(f"{name}: no dgxcluster containers")
        for parts in found:
            container = parts[0]
            label = parts[1] if len(parts) > 1 and parts[1] else container
            streams.append((session.cluster.conn(name), container, label))
    if not streams:
        return result
    on_note(f"following {len(streams)} container log(s); Ctrl-C to stop")
    redactor = CollectedRedactor(session.inventory.secrets.env, session.redactor)

    def redacted(node: str, label: str, line: str) -> None:
        on_line(node, label, redactor.text(line))

    followers = [_Follower(c, ctr, label, since_s, tail, redacted, on_note)
                 for c, ctr, label in streams]
    for f in followers:
        f.start()
        result.followed.append((f.conn.node, f.container))
    try:
        while not stop.is_set() and any(f.alive for f in followers):
            stop.wait(0.2)
    except KeyboardInterrupt:
        pass
    finally:
        for f in followers:
            f.release()
        for f in followers:
            f.join(10.0)
    return result


class _Follower:
    """One container's `docker logs -f` over its own channel, with stdin held open."""

    def __init__(self, conn: Connection, container: str, label: str, since_s: int,
                 tail: int, on_line: LineSink, on_note: NoteSink) -> None:
        self.conn = conn
        self.container = container
        self.label = label
        self._argv = follow_argv(container, since_s, tail)
        self._on_line = on_line
        self._on_note = on_note
        rfd, self._wfd = os.pipe()
        self._stdin = os.fdopen(rfd, "rb", buffering=0)
        self._released = False
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name=f"follow-{conn.node}-{container}")

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def start(self) -> None:
        self._thread.start()

    def release(self) -> None:
        """Close the remote side's stdin: its follower is killed and the channel ends."""
        if not self._released:
            self._released = True
            with contextlib.suppress(OSError):
                os.close(self._wfd)

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    def _run(self) -> None:
        node = self.conn.node

        def line(_stream: str, text: str) -> None:
            self._on_line(node, self.label, text)

        try:
            res = self.conn.run(self._argv, stdin=self._stdin, timeout=FOREVER_S, on_line=line)
            if not self._released:
                self._on_note(f"{node}[{self.label}]: log ended (exit {res.exit_code})")
        except ConnectError as exc:
            if not self._released:
                self._on_note(f"{node}[{self.label}]: connection lost: {exc.reason}")
        except Exception as exc:
            self._on_note(f"{node}[{self.label}]: {exc}")
        finally:
            self.release()
            with contextlib.suppress(OSError):
                self._stdin.close()
