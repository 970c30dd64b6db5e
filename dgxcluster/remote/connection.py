"""The small interface every capability is written against, and a test double's contract.

`SshConnection` implements it over SSH; unit tests pass in a fake that records calls.
A test checks that the interface, `SshConnection` and the fake have exactly the same
public methods, with the same parameters.
"""

from __future__ import annotations

from typing import Any, BinaryIO, Protocol, runtime_checkable

from dgxcluster.remote.command import Argv
from dgxcluster.remote.output import DEFAULT_KEEP
from dgxcluster.remote.process import ChunkCallback, LineCallback, LinesCallback, RemoteProcess
from dgxcluster.remote.result import Result

__all__ = ["ChunkCallback", "Connection", "LineCallback", "LinesCallback", "RemoteProcess",
           "Stream"]


class Stream(Protocol):
    """A byte stream to a TCP port as the node sees it (a paramiko Channel): the socket
    calls that carry bytes; `recv` returns b"" at the end, raises TimeoutError past the
    timeout."""

    def sendall(self, data: bytes) -> Any: ...

    def recv(self, size: int) -> bytes: ...

    def settimeout(self, timeout: float | None) -> None: ...

    def close(self) -> None: ...


@runtime_checkable
class Connection(Protocol):
    """One node's connection: run commands, move files. Opened once, reused by every step."""

    @property
    def node(self) -> str:
        """The node's inventory name."""
        ...

    def connect(self) -> None:
        """Open the connection now (it otherwise opens on first use); ConnectError if the
        node cannot be reached. Lets a caller overlap handshakes with local work."""
        ...

    def start(
        self,
        argv: Argv,
        *,
        stdin: bytes | BinaryIO | None = None,
        hold_stdin: bool = False,
        timeout: float | None = None,
        on_line: LineCallback | None = None,
        on_lines: LinesCallback | None = None,
        on_stdout_chunk: ChunkCallback | None = None,
        keep: int = DEFAULT_KEEP,
    ) -> RemoteProcess:
        """Start argv and return at once; the output streams to the callbacks.

        `stdin` is sent first; with `hold_stdin` stdin then stays open until
        `RemoteProcess.release()` (or the process ends), else it ends after the payload.
        Past `timeout` (default ssh.command_timeout) the process ends in CommandTimeout.
        `on_line` gets each non-empty line, `on_lines` blocks of lines (one call per chunk
        read: for big outputs). The Result keeps the last `keep` bytes of each stream
        (`Result.dropped` counts the rest). Raises ConnectError here if the node cannot be
        reached.
        """
        ...

    def run(
        self,
        argv: Argv,
        *,
        stdin: bytes | BinaryIO | None = None,
        timeout: float | None = None,
        on_line: LineCallback | None = None,
        on_lines: LinesCallback | None = None,
        on_stdout_chunk: ChunkCallback | None = None,
        keep: int = DEFAULT_KEEP,
    ) -> Result:
        """Run argv to its end (`start(...).result()`); never raises for a non-zero exit
        (call `.check()`).

        Raises ConnectError if the node cannot be reached, CommandTimeout past `timeout`.
        With `on_stdout_chunk`, stdout goes to the callback as bytes and Result.stdout is "".
        """
        ...

    def put(self, data: bytes, path: str, mode: int = 0o644, *,
            timeout: float | None = None) -> None:
        """Write `data` to `path` atomically with `mode` set before any byte is written.

        A relative path or one starting with `~/` is under the login user's home. `timeout`:
        seconds the node may leave one SFTP request unanswered (default 3 x
        ssh.connect_timeout); past it the connection is closed and ConnectError names the
        node and the path.
        """
        ...

    def get(self, path: str, *, timeout: float | None = None) -> bytes:
        """Read a whole remote file (`timeout` as for `put`)."""
        ...

    def tunnel(self, host: str, port: int, *, timeout: float | None = None) -> Stream:
        """A stream to `host:port` opened by the node over this SSH connection (a
        `direct-tcpip` channel, what `ssh -L` uses): how this machine reaches a port only the
        node can. Raises ConnectionRefusedError when the node cannot connect there (nothing
        listens), ConnectError when the node itself cannot be reached. `timeout` (default
        ssh.connect_timeout) bounds the opening and every read and write."""
        ...

    def close(self) -> None:
        """Close the connection (idempotent)."""
        ...
