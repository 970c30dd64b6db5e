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
import threading
import time
from types import TracebackType
from typing import BinaryIO

from dgxcluster.core.nodepaths import LOCK_FILE, home_relative
from dgxcluster.errors import DgxClusterError, LockHeld, StepError
from dgxcluster.remote.command import shell
from dgxcluster.remote.connection import Connection
from dgxcluster.remote.result import Result

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
        self._locked = threading.Event()
        self._held_by: str | None = None
        self._result: Result | None = None
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._write_fd: int | None = None
        self._gate: BinaryIO | None = None

    def _on_line(self, stream: str, line: str) -> None:
        if stream != "stdout":
            return
        if line == "LOCKED":
            self._locked.set()
        elif line.startswith("HELD"):
            self._held_by = line[len("HELD"):].strip() or "another dgxcluster run"

    def _hold(self, gate: BinaryIO) -> None:
        # The gate is closed by release(), never here: closing a reader that another thread
        # (the stdin feeder) is blocked on would wait for that read, i.e. forever.
        try:
            self._result = self.conn.run(shell(_SCRIPT, self.path, self.holder), stdin=gate,
                                         timeout=MAX_HOLD_S, on_line=self._on_line)
        except BaseException as exc:  # reported to the acquiring thread
            self._error = exc
        finally:
            self._locked.set()

    def acquire(self) -> None:
        read_fd, self._write_fd = os.pipe()
        self._gate = os.fdopen(read_fd, "rb")
        self._thread = threading.Thread(target=self._hold, args=(self._gate,), daemon=True,
                                        name=f"lock-{self.conn.node}")
        self._thread.start()
        if not self._locked.wait(self.acquire_timeout):
            self.release()
            raise StepError("lock", f"no answer from {self.conn.node} within "
                            f"{self.acquire_timeout:g}s while taking the cluster lock", self.conn.node)
        if self._error is not None:
            self.release()
            err = self._error
            if isinstance(err, DgxClusterError):
                raise err
            raise StepError("lock", f"{type(err).__name__}: {err}", self.conn.node)
        if self._result is not None:  # the script ended: someone else holds it, or it failed
            self.release()
            if self._result.exit_code == HELD_EXIT:
                raise LockHeld(
                    f"another start or stop is running on this cluster: the lock on "
                    f"{self.conn.node} ({self.shown}) is held by {self._held_by}"
                )
            raise StepError("lock", f"could not take {self.shown}: {self._result.stderr.strip()}",
                            self.conn.node)

    def _close_gate(self) -> None:
        """EOF on the channel's stdin: the remote shell exits and the kernel drops the flock."""
        if self._write_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._write_fd)
            self._write_fd = None

    def release(self) -> None:
        self._close_gate()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        if self._gate is not None and self._thread is None:
            with contextlib.suppress(OSError):
                self._gate.close()
            self._gate = None
        if self.own_connection:
            with contextlib.suppress(Exception):  # closing is best effort
                self.conn.close()

    def __enter__(self) -> ClusterLock:
        self.acquire()
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()
