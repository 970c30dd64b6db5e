"""Test doubles for the remote layer (unit tests only; end-to-end tests use real sshd).

`FakeConnection` implements `dgxcluster.remote.connection.Connection`, records every call,
and answers from a script of (matcher -> Result fields). A contract test checks that its
public methods are exactly those of the interface and of `SshConnection`.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import BinaryIO

from dgxcluster.errors import CommandTimeout, ConnectError
from dgxcluster.remote.command import Argv, for_display, to_command_line
from dgxcluster.remote.connection import ChunkCallback, LineCallback
from dgxcluster.remote.result import Result


@dataclass
class Reply:
    stdout: str = ""
    stderr: str = ""
    exit_code: int = 0
    delay_s: float = 0.0
    raises: BaseException | None = None


Responder = Callable[[list[str], bytes | None], Reply]


@dataclass
class FakeConnection:
    """Records calls; replies come from `rules` (first regex matching the command line wins)."""

    name: str
    rules: list[tuple[str, Reply | Responder]] = field(default_factory=list)
    files: dict[str, bytes] = field(default_factory=dict)
    modes: dict[str, int] = field(default_factory=dict)
    calls: list[list[str]] = field(default_factory=list)
    stdins: list[bytes | None] = field(default_factory=list)
    unreachable: str | None = None
    closed: bool = False

    @property
    def node(self) -> str:
        return self.name

    def on(self, pattern: str, reply: Reply | Responder) -> FakeConnection:
        self.rules.append((pattern, reply))
        return self

    def run(
        self,
        argv: Argv,
        *,
        stdin: bytes | BinaryIO | None = None,
        timeout: float | None = None,
        on_line: LineCallback | None = None,
        on_stdout_chunk: ChunkCallback | None = None,
    ) -> Result:
        line = to_command_line(argv)  # same refusal of secrets as the real transport
        if self.unreachable:
            raise ConnectError(self.name, self.unreachable)
        data = stdin.read() if stdin is not None and not isinstance(stdin, bytes) else stdin
        self.calls.append([str(a) for a in argv])
        self.stdins.append(data)
        reply: Reply = Reply()
        for pattern, r in self.rules:
            if re.search(pattern, line):
                reply = r if isinstance(r, Reply) else r([str(a) for a in argv], data)
                break
        if reply.raises is not None:
            raise reply.raises
        if reply.delay_s:
            if timeout is not None and reply.delay_s > timeout:
                raise CommandTimeout(self.name, for_display(argv), timeout)
            time.sleep(reply.delay_s)
        if on_stdout_chunk is not None:
            on_stdout_chunk(reply.stdout.encode())
        elif on_line is not None:
            for stream, text in (("stdout", reply.stdout), ("stderr", reply.stderr)):
                for ln in text.splitlines():
                    on_line(stream, ln)
        return Result(
            node=self.name,
            argv=for_display(argv),
            exit_code=reply.exit_code,
            stdout="" if on_stdout_chunk else reply.stdout,
            stderr=reply.stderr,
            duration_s=reply.delay_s,
        )

    def put(self, data: bytes, path: str, mode: int = 0o644) -> None:
        if self.unreachable:
            raise ConnectError(self.name, self.unreachable)
        self.files[path] = data
        self.modes[path] = mode

    def get(self, path: str) -> bytes:
        if self.unreachable:
            raise ConnectError(self.name, self.unreachable)
        try:
            return self.files[path]
        except KeyError:
            raise FileNotFoundError(path) from None

    def close(self) -> None:
        self.closed = True
