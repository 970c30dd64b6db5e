"""The cluster lock: one `start` or `stop` at a time per cluster, held on the head node, for
every user who runs dgxcluster against it.

The lock is the node-side `clusterlock` program (`nodeside/clusterlock.py`) holding a UNIX
socket at an abstract address named after the cluster: one per cluster per head node,
whoever logs in (not under the SSH user's $HOME, so two operators with different SSH users
contend for the same lock), and nothing on disk. It runs on this invocation's own connection
to the head, outside any fan-out (`remote.scope.detached`), so an interrupted stage does not
end it: it stays held while the rollback runs. It lives exactly as long as its SSH channel:
it waits on its stdin, which only this process can close; when dgxcluster ends, normally or
killed, the channel closes, the program exits and the kernel frees the address. A crashed
holder never leaves a stale lock behind, and whoever holds it tells whoever is refused
(user and machine, command, pid, since when, and the SSH user on the head).
"""

from __future__ import annotations

import getpass
import os
import socket
import time
from types import TracebackType

from dgxcluster.core import ship
from dgxcluster.errors import DgxClusterError, LockHeld, StepError
from dgxcluster.remote import scope
from dgxcluster.remote.connection import Connection, RemoteProcess
from dgxcluster.remote.result import Result

#: Exit status of the lock program when someone else holds the lock.
HELD_EXIT = 75
#: The holder's channel stays open this long at most (a run never takes a day).
MAX_HOLD_S = 24 * 3600.0
PROGRAM = "clusterlock"


def holder_text(command: str) -> str:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    who = f"{getpass.getuser()}@{socket.gethostname()}"
    return f"dgxcluster {command} by {who} pid {os.getpid()} since {stamp}"


class ClusterLock:
    """Context manager: `with ClusterLock(conn, inv.state_dir, inv.cluster, "start"): ...`
    on the head's connection (the invocation's one, `session.cluster.conn(head)`)."""

    def __init__(self, conn: Connection, state_dir: str, cluster: str, command: str,
                 acquire_timeout: float = 60.0):
        self.conn = conn
        self.cluster = cluster
        self.pyz = ship.home_path(state_dir, cluster)
        self.shown = f"the lock of cluster {cluster} on {conn.node}"
        self.holder = holder_text(command)
        self.acquire_timeout = acquire_timeout
        self._proc: RemoteProcess | None = None

    def _start(self) -> tuple[RemoteProcess, str | None]:
        with scope.detached():  # an interrupted fan-out must not end it
            proc = self.conn.start(ship.argv(self.pyz, PROGRAM, self.cluster, self.holder),
                                   stdin=b"", hold_stdin=True, timeout=MAX_HOLD_S)
        self._proc = proc
        return proc, proc.wait_line(lambda ln: ln == "LOCKED" or ln.startswith("HELD"),
                                    self.acquire_timeout)

    def acquire(self) -> None:
        try:
            proc, answer = self._start()
            if answer is None and ship.missing(self._ended(proc), self.pyz):
                ship.put_at(self.conn, self.pyz)  # first use on this node: ship, try again
                proc, answer = self._start()
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
        res = self._ended(proc)  # it ended: someone else holds it, or it failed
        if res.exit_code == HELD_EXIT:
            held_by = (answer or "HELD")[len("HELD"):].strip() or "another dgxcluster run"
            raise LockHeld(f"another start or stop is running on this cluster: {self.shown} "
                           f"is held by {held_by}")
        why = (res.stderr.strip() or res.stdout.strip() or f"exit {res.exit_code}")
        raise StepError("lock", f"could not take {self.shown}: {why.splitlines()[-1]}",
                        self.conn.node)

    def _ended(self, proc: RemoteProcess) -> Result:
        proc.release()
        try:
            return proc.result()
        except DgxClusterError:
            raise
        except Exception as err:
            raise StepError("lock", f"{type(err).__name__}: {err}", self.conn.node) from None

    def release(self) -> None:
        """EOF on the lock program's stdin: it exits and the kernel frees the lock."""
        proc = self._proc
        if proc is not None:
            proc.release()
            if not proc.wait(10):
                proc.kill()

    def __enter__(self) -> ClusterLock:
        self.acquire()
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()
