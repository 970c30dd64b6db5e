"""`dgxcluster logs --follow`: every dgxcluster container's log, live, from all nodes at once.

One SSH channel per container runs `docker logs -f`. The remote script also watches its
stdin, which the operator holds open: when the operator stops (Ctrl-C), or its connection
drops, stdin reaches EOF and the script kills `docker logs`, so no follower outlives the
command on any node (without a pty, sshd would not signal them).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from dgxcluster.core.naming import LABEL_ROLE, cluster_filter
from dgxcluster.core.session import Session
from dgxcluster.errors import ConnectError, DgxClusterError
from dgxcluster.remote.command import shell
from dgxcluster.remote.connection import Connection, RemoteProcess
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
    result = FollowResult()
    streams = _containers(session, session.cluster.select(nodes), result, on_note)
    if not streams:
        return result
    on_note(f"following {len(streams)} container log(s); Ctrl-C to stop")
    redactor = CollectedRedactor(session.inventory.secrets.env, session.redactor)

    def redacted(node: str, label: str, line: str) -> None:
        on_line(node, label, redactor.text(line))

    followers = [_Follower(c, ctr, label) for c, ctr, label in streams]

    def start_node(conn: Connection) -> None:  # every node's channels open at once
        for f in followers:
            if f.conn is conn:
                f.start(since_s, tail, redacted, on_note)

    try:
        session.cluster.map(start_node, list(dict.fromkeys(c.node for c, _, _ in streams)))
        result.followed = [(f.conn.node, f.container) for f in followers if f.proc is not None]
        while not stop.is_set() and any(f.alive for f in followers):
            for f in followers:
                f.report_end(on_note)
            stop.wait(0.2)
    except KeyboardInterrupt:
        pass
    finally:
        _end(followers, on_note)
    return result


def _containers(session: Session, targets: list[str], result: FollowResult,
                on_note: NoteSink) -> list[tuple[Connection, str, str]]:
    """(connection, container, label) of every dgxcluster container on the target nodes."""
    listing = session.cluster.run(list_argv(session.inventory.cluster), targets, timeout=30)
    streams: list[tuple[Connection, str, str]] = []
    for name in targets:
        value = listing[name]
        if isinstance(value, ConnectError):
            result.unreachable[name] = value.reason
            on_note(f"{name}: unreachable: {value.reason}")
        elif isinstance(value, BaseException):
            on_note(f"{name}: {value}")
        elif not value.ok:
            on_note(f"{name}: docker ps failed: {value.stderr.strip() or value.exit_code}")
        else:
            found = [ln.split("\t") for ln in value.stdout.splitlines() if ln.strip()]
            if not found:
                on_note(f"{name}: no dgxcluster containers")
            streams += [(session.cluster.conn(name), parts[0],
                         parts[1] if len(parts) > 1 and parts[1] else parts[0]) for parts in found]
    return streams


def _end(followers: list[_Follower], on_note: NoteSink) -> None:
    """Say why any ended by itself, then release the rest: their remote sides end too."""
    for f in followers:
        f.report_end(on_note)
        f.released = True
        if f.proc is not None:
            f.proc.release()
    for f in followers:
        if f.proc is not None and not f.proc.wait(10.0):
            f.proc.kill()


class _Follower:
    """One container's `docker logs -f` on its own channel, with stdin held open: released,
    the remote script kills its follower and the channel ends."""

    def __init__(self, conn: Connection, container: str, label: str) -> None:
        self.conn = conn
        self.container = container
        self.label = label
        self.proc: RemoteProcess | None = None
        self.released = False
        self._reported = False

    @property
    def alive(self) -> bool:
        return self.proc is not None and not self.proc.done

    def start(self, since_s: int, tail: int, on_line: LineSink, on_note: NoteSink) -> None:
        node, label = self.conn.node, self.label

        def line(_stream: str, text: str) -> None:
            on_line(node, label, text)

        try:
            self.proc = self.conn.start(follow_argv(self.container, since_s, tail), stdin=b"",
                                        hold_stdin=True, timeout=FOREVER_S, on_line=line)
        except DgxClusterError as exc:
            self._reported = True
            on_note(f"{node}[{label}]: {exc.reason if isinstance(exc, ConnectError) else exc}")

    def report_end(self, on_note: NoteSink) -> None:
        """Say once why a follower ended on its own (the container went, the node dropped)."""
        if self._reported or self.released or self.proc is None or not self.proc.done:
            return
        self._reported = True
        where = f"{self.conn.node}[{self.label}]"
        try:
            res = self.proc.result()
        except ConnectError as exc:
            on_note(f"{where}: connection lost: {exc.reason}")
            return
        except Exception as exc:
            on_note(f"{where}: {exc}")
            return
        on_note(f"{where}: log ended (exit {res.exit_code})")
