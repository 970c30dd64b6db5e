"""`conn.put` bounded in time, for the env-files `start` writes (SFTP has no timeout of
its own). Kept apart until the transport's `put` takes a timeout itself."""

from __future__ import annotations

import threading

from dgxcluster.core.docker import QUICK_S
from dgxcluster.errors import ConnectError
from dgxcluster.remote.connection import Connection


def put_file(conn: Connection, data: bytes, path: str, mode: int, timeout: float = QUICK_S) -> None:
    """`conn.put` bounded in time: SFTP has no timeout of its own, and a node that drops off
    the network mid-write would otherwise hang the whole run."""
    done = threading.Event()
    failure: list[BaseException] = []

    def write() -> None:
        try:
            conn.put(data, path, mode=mode)
        except BaseException as exc:  # handed to the caller below
            failure.append(exc)
        finally:
            done.set()

    threading.Thread(target=write, daemon=True, name=f"put-{conn.node}").start()
    if not done.wait(timeout):
        conn.close()  # unblocks the writer
        raise ConnectError(conn.node, f"no answer within {timeout:g}s while writing {path}")
    if failure:
        raise failure[0]
