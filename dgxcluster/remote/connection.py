"""The small interface every capability is written against, and a test double's contract.

`SshConnection` implements it over SSH; unit tests pass in a fake that records calls.
A test checks that every implementation has exactly these public methods.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import BinaryIO, Protocol, runtime_checkable

from dgxcluster.remote.command import Argv
from dgxcluster.remote.result import Result

#: Called with ("stdout" | "stderr", line) for each complete output line, live.
LineCallback = Callable[[str, str], None]
#: Called with each raw chunk of stdout when the caller wants bytes, not text.
ChunkCallback = Callable[[bytes], None]


@runtime_checkable
class Connection(Protocol):
    """One node's connection: run commands, move files. Opened once, reused by every step."""

    @property
    def node(self) -> str:
        """The node's inventory name."""
        ...

    def run(
        self,
        argv: Argv,
        *,
        stdin: bytes | BinaryIO | None = None,
        timeout: float | None = None,
        on_line: LineCallback | None = None,
        on_stdout_chunk: ChunkCallback | None = None,
    ) -> Result:
        """Run argv; never raises for a non-zero exit (call `.check()`).

        Raises ConnectError if the node cannot be reached, CommandTimeout past `timeout`.
        With `on_stdout_chunk`, stdout goes to the callback as bytes and Result.stdout is "".
        """
        ...

    def put(self, data: bytes, path: str, mode: int = 0o644) -> None:
        """Write `data` to `path` atomically with `mode` set before any byte is written.

        A relative path or one starting with `~/` is under the login user's home.
        """
        ...

    def get(self, path: str) -> bytes:
        """Read a whole remote file."""
        ...

    def close(self) -> None:
        """Close the connection (idempotent)."""
        ...
