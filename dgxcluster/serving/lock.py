"""The cluster lock: one `start` or `stop` at a time, held on the head node.

The lock is an flock(1) taken by a shell on the head node that lives exactly as long as
this process's SSH channel: it waits on its stdin, which only this process can close. When
dgxcluster ends, normally or killed, the channel closes, the shell exits, and the kernel
drops the flock. So a crashed holder never leaves a stale lock behind (unlike a pid file),
and whoever holds it is written next to it for the refusal message.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import socket
import time
from types import TracebackType

from dgxcluster.core.nodepaths import LOCK_FILE, home_relative
from dgxcluster.errors import DgxClusterError, LockHeld, StepError
from dgxcluster.remote.command import shell
from dgxcluster.remote.connection import Connection, RemoteProcess

#: Exit status of the lock script when someone else holds the lock.
HELD_EXIT = 75
#: The holder's channel stays open this long at most (a run never takes a day).
MAX_HOLD_S = 24 * 3600.0

_SCRIPT = (
    'cd "$HOME" 2>/dev/null; mkdir -p "$(dirname "$1")" && exec 9>>"$1" || exit 70; '
    'if ! flock -w 2 9; then printf "HELD %s\\n" "$(cat "$1.holder" 2>/dev/null)"; exit 75; fi; '
    'printf "%s\\n" "$2" >"$1.holder"; echo LOCKED; '
    'cat >/dev/null; rm -f "$1.holder"'
)


def lock_path(state_dir: str, cluster: str) -> str:
    """`NodePaths.lock_file`, relative to $HOME when under `~`."""
    return home_relative(state_dir, cluster, LOCK_FILE)


def holder_text(command: str) -> str:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    who = f"{getpass.getuser()}@{socket.gethostname()}"
    return f"dgxcluster {command} by {who} pid {os.getpid()} since {stamp}"


class ClusterLock:
    """Context manager: `with ClusterLock(conn, paths.lock_file, "start"): ...`.

    With `own_connection`, the lock closes `conn` at release. `start` and `stop` hold the
    lock on a connection of its own (`Cluster.dedicated`): an interrupted fan-out closes the
    pooled connections, and the lock must stay held until the rollback after it is done.
    """

    def __init__(self, conn: Connection, path: str, command: str, acquire_timeout: float = 60.0,
                 own_connection: bool = False):
        self.conn = conn
        self.own_connection = own_connection
        self.path = path
        self.shown = path if path.startswith("/") else f"~/{path}"
        self.holder = holder_text(command)
        self.acquire_timeout = acquire_timeout
        self._proc: RemoteProcess | None = None

    def acquire(self) -> None:
        try:
            self._proc = self.conn.start(shell(_SCRIPT, self.path, self.holder), stdin=b"",
                                         hold_stdin=True, timeout=MAX_HOLD_S)
            answer = self._proc.wait_line(lambda ln: ln == "LOCKED" or ln.startswith("HELD"),
                                          self.acquire_timeout)
        except TimeoutError:
            self.release()
            raise StepError("lock", f"no answer from {self.conn.node} within "
                            f"{self.acquire_timeout:g}s while taking the cluster lock",
                            self.conn.node) from None
        except BaseException:
            self.release()
            raise
        if answer == "LOCKED":
            return
        self.release()  # the script ended: someone else holds it, or it failed
        try:
            res = self._proc.result()
        except DgxClusterError:
            raise
        except Exception as err:
            raise StepError("lock", f"{type(err).__name__}: {err}", self.conn.node) from None
        if res.exit_code == HELD_EXIT:
            held_by = (answer or "HELD")[len("HELD"):].strip() or "another dgxcluster run"
            raise LockHeld(
                f"another start or stop is running on this cluster: the lock on "
                f"{self.conn.node} ({self.shown}) is held by {held_by}"
            )
        raise StepError("lock", f"could not take {self.shown}: {res.stderr.strip()}",
                        self.conn.node)

    def release(self) -> None:
        """EOF on the lock shell's stdin: it exits and the kernel drops the flock."""
        proc = self._proc
        if proc is not None:
            proc.release()
            if not proc.wait(10):
                proc.kill()
        if self.own_connection:
            with contextlib.suppress(Exception):  # closing is best effort
                self.conn.close()

    def __enter__(self) -> ClusterLock:
        self.acquire()
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()
