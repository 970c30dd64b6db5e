"""Test doubles for the remote layer (unit tests only; end-to-end tests use real sshd).

`FakeConnection` implements `dgxcluster.remote.connection.Connection`, records every call,
and answers from a script of (matcher -> Result fields). A contract test checks that its
public methods are exactly those of the interface and of `SshConnection`, apart from the
one way tests script it, `on` (listed in `FakeConnection.SCRIPTING`).

`start` returns a `FakeProcess`: the same `RemoteProcess` handle the SSH transport returns,
fed from the reply. A reply with `until_eof` plays a command that reads its stdin to the
end (the cluster lock's shell, a log follower, a relay agent): it ends only once released.
"""

from __future__ import annotations

import re
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, BinaryIO, ClassVar

from dgxcluster.errors import CommandTimeout, ConnectError
from dgxcluster.remote import scope
from dgxcluster.remote.command import Argv, for_display, to_command_line
from dgxcluster.remote.connection import Stream
from dgxcluster.remote.output import DEFAULT_KEEP
from dgxcluster.remote.process import (
    KILLED,
    ChunkCallback,
    LineCallback,
    LinesCallback,
    RemoteProcess,
)
from dgxcluster.remote.result import Result


@dataclass
class Reply:
    stdout: str = ""
    stderr: str = ""
    exit_code: int = 0
    delay_s: float = 0.0
    raises: BaseException | None = None
    #: The command reads its stdin to EOF before it exits (the output comes first).
    until_eof: bool = False


Responder = Callable[[list[str], bytes | None], Reply]


class FakeProcess(RemoteProcess):
    """A reply played as a running command: output, then (with `until_eof`) a wait for
    release, then the exit code."""

    def __init__(self, node: str, argv: str, reply: Reply, timeout: float | None,
                 **output: Any) -> None:
        super().__init__(node, argv, **output)
        self._reply = reply
        self._timeout = timeout
        self._kill = threading.Event()

    def _begin(self) -> FakeProcess:
        self._join_scope()
        r = self._reply
        if r.delay_s or r.until_eof:
            threading.Thread(target=self._play, daemon=True, name=f"fake-{self.node}").start()
        else:
            self._play()
        return self

    def _close_channel(self) -> None:
        self._kill.set()

    def _play(self) -> None:
        r, timeout = self._reply, self._timeout
        if r.raises is not None:
            self._finish(r.raises)
            return
        if r.delay_s:
            if timeout is not None and r.delay_s > timeout:
                self._finish(CommandTimeout(self.node, self.argv, timeout))
                return
            self._kill.wait(r.delay_s)
        if not self._killed:
            try:
                self._emit(r)
            except BaseException as exc:  # a callback raised: handed to result()
                self._finish(exc)
                return
        if r.until_eof and not self._released.wait(timeout):  # kill() releases too
            self._finish(CommandTimeout(self.node, self.argv, timeout or 0.0))
            return
        self._finish(self._result(KILLED if self._killed else r.exit_code, r.delay_s))

    def _emit(self, r: Reply) -> None:
        self._output("stdout", r.stdout.encode())
        self._output("stderr", r.stderr.encode())
        self._output_end()


class ChannelDouble:
    """What `tunnel` returns: a socket seen only through the calls a paramiko Channel shares
    with it (no `makefile` that http.client could lean on: a Channel's file has no `peek`)."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock

    def sendall(self, data: bytes) -> None:
        self._sock.sendall(data)

    def recv(self, size: int) -> bytes:
        return self._sock.recv(size)

    def settimeout(self, timeout: float | None) -> None:
        self._sock.settimeout(timeout)

    def close(self) -> None:
        self._sock.close()


@dataclass
class FakeConnection:
    """Records calls; replies come from `rules` (first regex matching the command line wins)."""

    SCRIPTING: ClassVar[frozenset[str]] = frozenset({"on"})

    name: str
    rules: list[tuple[str, Reply | Responder]] = field(default_factory=list)
    files: dict[str, bytes] = field(default_factory=dict)
    modes: dict[str, int] = field(default_factory=dict)
    calls: list[list[str]] = field(default_factory=list)
    stdins: list[bytes | None] = field(default_factory=list)
    processes: list[FakeProcess] = field(default_factory=list)
    put_timeouts: list[float | None] = field(default_factory=list)
    unreachable: str | None = None
    #: What `tunnel(host, port)` reaches here: (host, port) on the node -> (host, port) here.
    forwards: dict[tuple[str, int], tuple[str, int]] = field(default_factory=dict)
    tunnels: list[tuple[str, int]] = field(default_factory=list)
    connected: bool = False
    closed: bool = False

    @property
    def node(self) -> str:
        return self.name

    def on(self, pattern: str, reply: Reply | Responder) -> FakeConnection:
        self.rules.append((pattern, reply))
        return self

    def connect(self) -> None:
        if self.unreachable:
            raise ConnectError(self.name, self.unreachable)
        self.connected = True

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
        line = to_command_line(argv)  # same refusal of secrets as the real transport
        scope.check(self.name)
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
        proc = FakeProcess(self.name, for_display(argv), reply, timeout, on_line=on_line,
                           on_lines=on_lines, on_chunk=on_stdout_chunk, keep=keep)
        self.processes.append(proc)
        return proc._begin()

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
        return self.start(argv, stdin=stdin, timeout=timeout, on_line=on_line, on_lines=on_lines,
                          on_stdout_chunk=on_stdout_chunk, keep=keep).result()

    def put(self, data: bytes, path: str, mode: int = 0o644, *,
            timeout: float | None = None) -> None:
        if self.unreachable:
            raise ConnectError(self.name, self.unreachable)
        self.files[path] = data
        self.modes[path] = mode
        self.put_timeouts.append(timeout)

    def get(self, path: str, *, timeout: float | None = None) -> bytes:
        if self.unreachable:
            raise ConnectError(self.name, self.unreachable)
        try:
            return self.files[path]
        except KeyError:
            raise FileNotFoundError(path) from None

    def tunnel(self, host: str, port: int, *, timeout: float | None = None) -> Stream:
        if self.unreachable:
            raise ConnectError(self.name, self.unreachable)
        self.tunnels.append((host, port))
        if (host, port) not in self.forwards:
            raise ConnectionRefusedError(f"{self.name} cannot connect to {host}:{port}")
        return ChannelDouble(socket.create_connection(self.forwards[(host, port)],
                                                      timeout=timeout))

    def close(self) -> None:
        self.closed = True
