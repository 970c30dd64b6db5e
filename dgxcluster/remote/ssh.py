"""SSH transport over Fabric/paramiko: the only module that opens connections.

One connection per node per invocation, opened lazily and reused. Commands run on raw
paramiko channels so stdin can stream large payloads and output can stream line by line.
Host keys are checked against the inventory's known_hosts (see hostkeys.py).
"""

from __future__ import annotations

import contextlib
import logging
import select
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

import paramiko
from fabric import Config
from fabric import Connection as FabricConnection

from dgxcluster.errors import Cancelled, CommandTimeout, ConnectError, HostKeyError
from dgxcluster.inventory.schema import NodeSpec, SshSettings
from dgxcluster.remote import scope
from dgxcluster.remote.command import Argv, for_display, to_command_line
from dgxcluster.remote.connection import Stream
from dgxcluster.remote.hostkeys import changed_key_error, load_known_hosts, policy_for
from dgxcluster.remote.jumps import Gateways, Lease, Retryable
from dgxcluster.remote.output import DEFAULT_KEEP
from dgxcluster.remote.process import (
    KILLED,
    ChunkCallback,
    LineCallback,
    LinesCallback,
    RemoteProcess,
)
from dgxcluster.remote.result import Result
from dgxcluster.remote.route import DIRECT, Route
from dgxcluster.remote.transport import transport
from dgxcluster.runlog import get_logger
from dgxcluster.secrets import Redactor

CHUNK = 256 * 1024
#: A command channel's window and largest packet we accept (RFC 4254 5.1; paramiko's
#: defaults are 2 MiB and 32 KiB, OpenSSH accepts packets up to 256 KiB, `PACKET_MAX_SIZE` in
#: its packet.c). paramiko spends Python time per packet and sshd stops at a full window:
#: 300 MB of output through `exec` took 2.2-2.7 s of wall and ~2.2 s of CPU with the defaults,
#: 1.9-2.2 s with these (benchmarks/exec; docs/DEVELOPING.md).
CHANNEL_WINDOW = 16 << 20
CHANNEL_MAX_PACKET = 256 << 10
#: One read of a channel's output. Less than the window: a partial read makes paramiko move
#: what is left (a C memmove), while every byte of a larger block is copied ~3 times after
#: it (lines, masking, prefixes): 4 MiB blocks held the CLI's peak RSS at 90-100 MB, 1 MiB
#: at ~72 MB for 300 MB of output.
RECV = 1 << 20

# paramiko logs transport failures to stderr by itself; we report them as ConnectError instead.
logging.getLogger("paramiko").addHandler(logging.NullHandler())
logging.getLogger("paramiko").propagate = False


class _Transient(Exception):
    """A connect failure worth one more try (refused/reset: a daemon restarting)."""


class SshConnection:
    """A `Connection` to one node over SSH."""

    def __init__(
        self,
        spec: NodeSpec,
        ssh: SshSettings,
        *,
        known_hosts: Path,
        identity_file: Path | None = None,
        redactor: Redactor | None = None,
        route: Route = DIRECT,
        gateways: Gateways | None = None,
    ) -> None:
        self._spec = spec
        self._ssh = ssh
        self._known_hosts = known_hosts
        self._identity = identity_file
        self._route = route
        self._gateways = gateways
        self._lease: Lease | None = None
        self._redact = redactor or Redactor()
        self._lock = threading.Lock()
        self._conn: Any = None
        self._sftp: paramiko.SFTPClient | None = None
        self._log = get_logger(node=spec.name)

    @property
    def node(self) -> str:
        return self._spec.name

    # -- connecting ---------------------------------------------------------------------

    def _transport(self) -> paramiko.Transport:
        with self._lock:
            if self._conn is not None:
                t = self._conn.client.get_transport()
                if t is not None and t.is_active():
                    return t  # type: ignore[no-any-return]
                self._drop()
            try:
                self._conn = self._open()
            except _Transient:
                self._conn = self._open_again()
            t = self._conn.client.get_transport()
            assert t is not None
            t.set_keepalive(int(self._ssh.keepalive_s))
            return t  # type: ignore[no-any-return]

    def _open_again(self) -> Any:
        """Two more tries, 0.5 s apart, after a refused or reset first one (an sshd that is
        restarting). tenacity is imported only here: with the asyncio it loads, it would
        add ~20 ms to the start-up of every command for a path few of them take."""
        from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_fixed

        time.sleep(0.5)
        for attempt in Retrying(retry=retry_if_exception_type(_Transient), stop=stop_after_attempt(2),
                                wait=wait_fixed(0.5), reraise=True):
            with attempt:
                return self._open()
        raise AssertionError("unreachable: Retrying re-raises the last failure")

    def _open(self) -> Any:
        spec, ssh = self._spec, self._ssh
        timeout = ssh.connect_timeout
        kwargs: dict[str, Any] = {
            "banner_timeout": timeout,
            "auth_timeout": timeout,
            "channel_timeout": timeout,
            "transport_factory": transport,
        }
        if self._identity is not None:
            kwargs["key_filename"] = str(self._identity)
        config = Config(overrides={"run": {"hide": True, "warn": True}})
        route = self._route
        conn = FabricConnection(
            host=spec.host,
            user=spec.user or ssh.user,
            port=spec.port if spec.port != 22 else None,
            config=config,
            connect_timeout=timeout,
            connect_kwargs=kwargs,
            # never Fabric's own ProxyJump gateway (auto-add policy, no known_hosts): jump
            # hosts go through self._gateways, checked like every node
            gateway=route.proxy_command or False,
        )
        client: paramiko.SSHClient = conn.client
        load_known_hosts(client, self._known_hosts)
        port = int(conn.port)
        client.set_missing_host_key_policy(
            policy_for(ssh.host_key_policy, spec.name, self._known_hosts, port)
        )
        where = f"{conn.user}@{conn.host}:{port}"
        if route.hops:
            where += f" through jump host {route.hops[-1].label}"
            self._lease = self._through_jumps(conn, route, port)
        try:
            conn.open()
        except HostKeyError:
            self._abandon(conn)
            raise
        except paramiko.BadHostKeyException as exc:
            self._abandon(conn)
            raise changed_key_error(spec.name, exc, self._known_hosts, port) from None
        except paramiko.AuthenticationException as exc:
            self._abandon(conn)
            raise ConnectError(
                spec.name,
                f"authentication failed for {where}: {exc}",
                hint="check ssh.user / ssh.identity_file, or that your key is in the node's "
                "authorized_keys",
            ) from None
        except TimeoutError:
            self._abandon(conn)
            raise ConnectError(
                spec.name, f"connecting to {where} timed out after {timeout:g}s"
            ) from None
        except paramiko.SSHException as exc:
            self._abandon(conn)
            text = str(exc)
            if "banner" in text.lower() or "no existing session" in text.lower():
                text = (
                    f"{where} accepted the connection but sent no SSH banner within {timeout:g}s "
                    "or did not finish the handshake (sshd hung or overloaded)"
                )
            raise ConnectError(spec.name, text) from None
        except (ConnectionRefusedError, ConnectionResetError) as exc:
            self._abandon(conn)
            raise _Transient(f"{where}: {exc.strerror or exc}") from None
        except paramiko.ssh_exception.NoValidConnectionsError as exc:
            self._abandon(conn)
            reasons = "; ".join(sorted({getattr(e, "strerror", None) or str(e) for e in exc.errors.values()}))
            raise _Transient(f"{where}: {reasons}") from None
        except OSError as exc:
            self._abandon(conn)
            raise ConnectError(spec.name, f"{where}: {exc.strerror or exc}") from None
        return conn

    def _through_jumps(self, conn: Any, route: Route, port: int) -> Lease:
        """Open the node's socket through its jump hosts (each checked like a node)."""
        gateways = self._gateways or Gateways(self._ssh, self._known_hosts, self._identity)
        self._gateways = gateways
        self._release_jump()
        try:
            lease, chan = gateways.open_channel(route, self._spec.name, (str(conn.host), port))
        except Retryable as exc:
            raise _Transient(exc.reason) from None
        conn.connect_kwargs["sock"] = chan
        return lease

    def _abandon(self, conn: Any) -> None:
        conn.close()
        self._release_jump()

    def _release_jump(self) -> None:
        lease, self._lease = self._lease, None
        if lease is not None:
            lease.release()

    def connect(self) -> None:
        """Open the connection now (normally it opens on first use)."""
        try:
            self._transport()
        except _Transient as exc:
            raise ConnectError(self.node, str(exc)) from None

    def _drop(self) -> None:
        if self._sftp is not None:
            with contextlib.suppress(Exception):
                self._sftp.close()
            self._sftp = None
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None
        self._release_jump()

    def close(self) -> None:
        with self._lock:
            self._drop()

    # -- running ------------------------------------------------------------------------

    def _live_transport(self) -> paramiko.Transport:
        try:
            return self._transport()
        except _Transient as exc:
            raise ConnectError(self.node, str(exc)) from None

    def _channel(self) -> paramiko.Channel:
        transport = self._live_transport()
        try:
            return transport.open_session(timeout=self._ssh.connect_timeout,
                                          window_size=CHANNEL_WINDOW,
                                          max_packet_size=CHANNEL_MAX_PACKET)
        except (paramiko.SSHException, EOFError, OSError) as exc:
            self.close()
            raise ConnectError(self.node, f"connection lost: {exc or type(exc).__name__}") from None

    def tunnel(self, host: str, port: int, *, timeout: float | None = None) -> Stream:
        limit = timeout if timeout is not None else self._ssh.connect_timeout
        transport = self._live_transport()
        try:
            chan = transport.open_channel("direct-tcpip", (host, port), ("127.0.0.1", 0),
                                          timeout=limit)
        except paramiko.ChannelException as exc:  # the node's connect failed (RFC 4254 7.2)
            raise ConnectionRefusedError(f"{self.node} cannot connect to "
                                         f"{host}:{port}: {exc.text}") from None
        except (paramiko.SSHException, EOFError, OSError) as exc:
            self.close()
            raise ConnectError(self.node, f"connection lost: {exc or type(exc).__name__}") from None
        chan.settimeout(limit)
        return chan

    def _answered(self, chan: paramiko.Channel, what: str, request: Callable[[], object]) -> None:
        """A channel request (exec, subsystem) paramiko would wait on without limit: a node
        that stops answering gets connect_timeout, then the connection is closed."""
        limit = self._ssh.connect_timeout
        fired: list[bool] = []

        def give_up() -> None:
            fired.append(True)
            with contextlib.suppress(Exception):
                chan.close()

        timer = threading.Timer(limit, give_up)
        timer.daemon = True
        timer.start()
        try:
            request()
        except (paramiko.SSHException, EOFError, OSError) as exc:
            self.close()
            if fired:
                raise ConnectError(self.node, f"no answer within {limit:g}s while {what}") from None
            raise ConnectError(self.node, f"connection lost: {exc or type(exc).__name__}") from None
        finally:
            timer.cancel()

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
        cmdline = to_command_line(argv)
        shown = self._redact(for_display(argv))
        limit = self._ssh.command_timeout if timeout is None else timeout
        scope.check(self.node)
        chan = self._channel()
        self._answered(chan, f"starting `{_brief(shown)}`", lambda: chan.exec_command(cmdline))
        proc = _SshProcess(self, chan, shown, limit, on_line=on_line, on_lines=on_lines,
                           on_chunk=on_stdout_chunk, keep=keep, redactor=self._redact)
        return proc._begin(stdin, hold_stdin)

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
        proc = self.start(argv, stdin=stdin, timeout=timeout, on_line=on_line, on_lines=on_lines,
                          on_stdout_chunk=on_stdout_chunk, keep=keep)
        try:
            return proc.result()
        except BaseException:
            proc.kill()  # interrupted: the remote side sees its channel close
            raise

    # -- files --------------------------------------------------------------------------

    def _sftp_limit(self, timeout: float | None) -> float:
        return 3 * self._ssh.connect_timeout if timeout is None else timeout

    @contextlib.contextmanager
    def _sftp_errors(self, doing: str, path: str, limit: float) -> Iterator[None]:
        """A node that stops answering mid-transfer: the channel's timeout fires, the
        connection (whose state is now unknown) is closed, and the error names the path.
        An interrupted fan-out (`scope.py`) closes only the SFTP channel, and the connection
        stays."""
        scope.check(self.node)
        try:
            with scope.registered(self._drop_sftp):
                yield
        except (TimeoutError, paramiko.SSHException, EOFError, OSError) as exc:
            current = scope.current()
            if current is not None and current.cancelled:
                raise Cancelled(self.node) from None
            if isinstance(exc, TimeoutError):
                self.close()
                raise ConnectError(self.node, f"no answer within {limit:g}s while {doing} "
                                   f"{path} (SFTP)") from None
            if isinstance(exc, (paramiko.SSHException, EOFError)):
                self.close()
                raise ConnectError(self.node, f"connection lost while {doing} {path}: "
                                   f"{exc or type(exc).__name__}") from None
            raise

    def _drop_sftp(self) -> None:
        with self._lock:
            sftp, self._sftp = self._sftp, None
        if sftp is not None:
            with contextlib.suppress(Exception):
                sftp.close()

    def _sftp_client(self, limit: float) -> paramiko.SFTPClient:
        with self._lock:
            sftp = self._sftp
        if not _usable(sftp):
            chan = self._channel()
            chan.settimeout(limit)
            self._answered(chan, "starting SFTP", lambda: chan.invoke_subsystem("sftp"))
            sftp = paramiko.SFTPClient(chan)  # the version exchange, bounded by the timeout
            with self._lock:
                if not _usable(self._sftp):
                    self._sftp = sftp
                else:  # another thread opened one meanwhile
                    with contextlib.suppress(Exception):
                        sftp.close()
                    sftp = self._sftp
        assert sftp is not None
        live = sftp.get_channel()
        if live is not None:
            live.settimeout(limit)
        return sftp

    def put(self, data: bytes, path: str, mode: int = 0o644, *,
            timeout: float | None = None) -> None:
        limit = self._sftp_limit(timeout)
        target = _sftp_path(path)
        tmp = f"{target}.tmp-{uuid.uuid4().hex[:8]}"
        with self._sftp_errors("writing", path, limit):
            sftp = self._sftp_client(limit)
            _sftp_makedirs(sftp, str(PurePosixPath(target).parent))
            try:
                fh = sftp.open(tmp, "wb")
                fh.chmod(mode)
                fh.set_pipelined(True)
                fh.write(data)
                fh.close()  # waits for every write to be acknowledged
                sftp.posix_rename(tmp, target)
            except TimeoutError:
                raise  # the node is not answering: no clean-up request would be either
            except BaseException:
                with contextlib.suppress(Exception):
                    sftp.remove(tmp)
                raise
        self._log.debug("remote.put", path=path, bytes=len(data), mode=oct(mode))

    def get(self, path: str, *, timeout: float | None = None) -> bytes:
        limit = self._sftp_limit(timeout)
        with self._sftp_errors("reading", path, limit):
            sftp = self._sftp_client(limit)
            fh = sftp.open(_sftp_path(path), "rb")
            data = fh.read()
            fh.close()
            return data


class _SshProcess(RemoteProcess):
    """A command on its own channel: a feeder thread writes stdin (then holds it open until
    released), a pump thread reads both output streams until the command ends."""

    def __init__(self, conn: SshConnection, chan: paramiko.Channel, shown: str, limit: float,
                 **output: Any) -> None:
        super().__init__(conn.node, shown, **output)
        self._conn = conn
        self._chan = chan
        self._limit = limit
        self._started = time.monotonic()

    def _begin(self, stdin: bytes | BinaryIO | None, hold: bool) -> _SshProcess:
        self._join_scope()
        if stdin is None and not hold:
            self._chan.shutdown_write()
        else:
            threading.Thread(target=self._feed, args=(stdin, hold), daemon=True,
                             name=f"stdin-{self.node}").start()
        threading.Thread(target=self._pump, daemon=True, name=f"out-{self.node}").start()
        return self

    def _close_channel(self) -> None:
        with contextlib.suppress(Exception):
            self._chan.close()

    def _feed(self, stdin: bytes | BinaryIO | None, hold: bool) -> None:
        chan = self._chan
        try:
            if isinstance(stdin, (bytes, bytearray, memoryview)):
                view = memoryview(stdin)
                for i in range(0, len(view), CHUNK):
                    chan.sendall(bytes(view[i : i + CHUNK]))
            elif stdin is not None:
                while chunk := stdin.read(CHUNK):
                    chan.sendall(chunk)
            if hold:
                self._released.wait()
        except (OSError, EOFError, paramiko.SSHException):
            pass
        finally:
            with contextlib.suppress(Exception):
                chan.shutdown_write()

    def _pump(self) -> None:
        try:
            code = _pump(self._chan, self, self._started + self._limit)
        except TimeoutError:
            self._close_channel()
            self._conn._log.warning("remote.timeout", argv=self.argv, timeout_s=self._limit)
            self._finish(CommandTimeout(self.node, self.argv, self._limit))
            return
        except BaseException as exc:  # a callback raised (handed to result()), or kill()
            self._close_channel()
            if not self._killed:
                self._finish(exc)
                return
            code = KILLED
        if self._killed:
            code = KILLED
        elif code is None:
            self._conn.close()
            self._finish(ConnectError(self.node, f"connection lost while running `{_brief(self.argv)}`"))
            return
        duration = time.monotonic() - self._started
        self._conn._log.debug("remote.run", argv=self.argv, exit=code, duration_s=round(duration, 3))
        self._finish(self._result(code, duration))


def _usable(sftp: paramiko.SFTPClient | None) -> bool:
    chan = sftp.get_channel() if sftp is not None else None
    return chan is not None and not chan.closed


def _brief(shown: str) -> str:
    first = shown.splitlines()[0] if shown else shown
    return first if len(first) <= 60 and first == shown else first[:57] + "..."


def _sftp_path(path: str) -> str:
    if path.startswith("~/"):
        return path[2:]
    if path == "~":
        return "."
    return path


def _sftp_makedirs(sftp: paramiko.SFTPClient, path: str) -> None:
    if path in ("", ".", "/"):
        return
    try:
        sftp.stat(path)
        return
    except FileNotFoundError:
        pass
    _sftp_makedirs(sftp, str(PurePosixPath(path).parent))
    with contextlib.suppress(OSError):
        sftp.mkdir(path, mode=0o700)


def _pump(chan: paramiko.Channel, proc: RemoteProcess, deadline: float) -> int | None:
    """Read both streams into `proc` until the command exits; None if the connection dropped."""
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError
        select.select([chan], [], [], min(remaining, 1.0))
        _drain(chan, proc)
        if chan.exit_status_ready() and not chan.recv_ready() and not chan.recv_stderr_ready():
            if chan.eof_received or chan.closed:
                break
            chan.status_event.wait(0.05)
        transport = chan.get_transport()
        dropped = chan.closed or transport is None or not transport.is_active()
        if dropped and not chan.exit_status_ready():
            proc._output_end()
            return None
    _drain(chan, proc)  # anything that arrived with the exit status
    proc._output_end()
    code = chan.recv_exit_status()
    if code == -1 and _connection_gone(chan):
        return None  # the server sent no exit status: sshd died or the network went away
    return code


def _drain(chan: paramiko.Channel, proc: RemoteProcess) -> None:
    while chan.recv_ready():
        proc._output("stdout", chan.recv(RECV))
    while chan.recv_stderr_ready():
        proc._output("stderr", chan.recv_stderr(RECV))


def _connection_gone(chan: paramiko.Channel, grace_s: float = 1.0) -> bool:
    """paramiko says -1 when no exit status came: the connection ended (paramiko closes the
    channels a moment before it marks the transport inactive), or the process died of a
    signal (OpenSSH then sends exit-signal, which paramiko does not read)."""
    deadline = time.monotonic() + grace_s
    while True:
        transport = chan.get_transport()
        if transport is None or not transport.is_active():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
