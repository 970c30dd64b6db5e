"""Jump hosts, connected by dgxcluster itself and checked like every node.

Fabric would build a ProxyJump gateway on its own, with paramiko's auto-add policy and no
known_hosts: a jump host with any key would be accepted, and every node behind it reached
through it. Here each hop is a paramiko client with the inventory's known_hosts and host key
policy (strict or accept-new; a changed key is always refused), opened through the previous
hop's `direct-tcpip` channel. One connection per jump host per invocation, shared by every
node behind it (counted: the last node to let go closes it). A jump host that fails is
remembered for the invocation, so the nodes behind it are refused at once, not one timeout
each.
"""

from __future__ import annotations

import contextlib
import functools
import getpass
import threading
import time
from pathlib import Path

import paramiko

from dgxcluster.errors import ConnectError, HostKeyError
from dgxcluster.inventory.schema import SshSettings
from dgxcluster.remote.hostkeys import changed_key_error, load_known_hosts, policy_for
from dgxcluster.remote.route import Hop, Route, SshLookup
from dgxcluster.remote.transport import transport as make_transport
from dgxcluster.runlog import get_logger

ROLE = "jump host"


def ssh_config_lookup() -> SshLookup:
    """~/.ssh/config (and /etc/ssh/ssh_config) as Fabric reads them for the nodes themselves."""
    from fabric import Config

    return Config().base_ssh_config.lookup  # type: ignore[no-any-return]


@functools.lru_cache(maxsize=64)
def resolved_host(host: str) -> str:
    """`host` as `ssh` reaches it: ~/.ssh/config's HostName for an alias, else `host`. For
    addresses this machine opens itself (the HTTP endpoint), which know no ssh aliases."""
    try:
        cfg = ssh_config_lookup()(host)
    except Exception:  # an unreadable ssh config: the connection step reports it
        return host
    return str(cfg.get("hostname") or host)


def local_user() -> str:
    """Who ssh would log in as when nothing else says (Fabric's default too)."""
    return getpass.getuser()


class Retryable(ConnectError):
    """The jump host refused or reset the connection: worth another try (a daemon restarting)."""


class _Failure(Exception):
    """How a jump host failed, to be told to every node behind it."""

    def __init__(self, retry: bool, host_key: bool, reason: str, hint: str | None = None) -> None:
        super().__init__(reason)
        self.retry = retry
        self.host_key = host_key
        self.reason = reason
        self.hint = hint

    def for_node(self, node: str) -> ConnectError:
        cls = Retryable if self.retry else HostKeyError if self.host_key else ConnectError
        return cls(node, self.reason, hint=self.hint)


class _Jump:
    """One live jump connection and how many users (nodes, deeper hops) hold it."""

    def __init__(self, key: tuple[tuple[str, int, str], ...], hop: Hop,
                 client: paramiko.SSHClient, parent: _Jump | None) -> None:
        self.key = key
        self.hop = hop
        self.client = client
        self.parent = parent
        self.users = 1

    @property
    def transport(self) -> paramiko.Transport:
        t = self.client.get_transport()
        if t is None:
            raise EOFError("jump connection closed")
        return t

    def alive(self) -> bool:
        t = self.client.get_transport()
        return t is not None and t.is_active()


class Lease:
    """A node's hold on its jump connection; `release()` once (the node's connection closed)."""

    def __init__(self, pool: Gateways, jump: _Jump) -> None:
        self._pool = pool
        self._jump: _Jump | None = jump

    def release(self) -> None:
        jump, self._jump = self._jump, None
        if jump is not None:
            self._pool._release(jump)


class Gateways:
    """The jump connections of one invocation."""

    def __init__(self, ssh: SshSettings, known_hosts: Path, identity_file: Path | None) -> None:
        self._ssh = ssh
        self._known_hosts = known_hosts
        self._identity = identity_file
        self._lock = threading.Lock()
        self._opening: dict[tuple[tuple[str, int, str], ...], threading.Lock] = {}
        self._live: dict[tuple[tuple[str, int, str], ...], _Jump] = {}
        self._failed: dict[tuple[tuple[str, int, str], ...], _Failure] = {}
        self.opened = 0  # connections made to jump hosts (tests check the sharing)

    def open_channel(self, route: Route, node: str, dest: tuple[str, int]) -> tuple[Lease, paramiko.Channel]:
        """A `direct-tcpip` channel to `dest` through the route's last hop, every hop checked.
        Raises ConnectError/HostKeyError naming `node` and the jump host (Retryable for a
        refused connection)."""
        jump = self._acquire(route.hops, node)
        try:
            chan = self._channel(jump, dest)
        except _ChannelFailed as exc:
            self._release(jump)
            raise ConnectError(node, str(exc)) from None
        return Lease(self, jump), chan

    def close(self) -> None:
        """Close every jump connection (the end of the invocation)."""
        with self._lock:
            jumps = list(self._live.values())
            self._live.clear()
        for j in jumps:
            with contextlib.suppress(Exception):
                j.client.close()

    # -- the pool ---------------------------------------------------------------------------

    def _key_lock(self, key: tuple[tuple[str, int, str], ...]) -> threading.Lock:
        with self._lock:
            return self._opening.setdefault(key, threading.Lock())

    def _acquire(self, hops: tuple[Hop, ...], node: str) -> _Jump:
        key = tuple(h.key for h in hops)
        with self._key_lock(key):
            with self._lock:
                live = self._live.get(key)
                if live is not None and live.alive():
                    live.users += 1
                    return live
                failed = self._failed.get(key)
            if failed is not None:
                raise failed.for_node(node)
            parent = self._acquire(hops[:-1], node) if len(hops) > 1 else None
            try:
                client = self._connect(hops[-1], parent)
            except _Failure as failure:
                if parent is not None:
                    self._release(parent)
                if not failure.retry:
                    with self._lock:
                        self._failed[key] = failure
                raise failure.for_node(node) from None
            jump = _Jump(key, hops[-1], client, parent)
            with self._lock:
                self._live[key] = jump
                self.opened += 1
            return jump

    def _release(self, jump: _Jump) -> None:
        with self._lock:
            jump.users -= 1
            last = jump.users <= 0
            if last and self._live.get(jump.key) is jump:
                del self._live[jump.key]
        if last:
            with contextlib.suppress(Exception):
                jump.client.close()
            if jump.parent is not None:
                self._release(jump.parent)

    # -- connecting one hop -----------------------------------------------------------------

    def _channel(self, jump: _Jump, dest: tuple[str, int]) -> paramiko.Channel:
        hop = jump.hop
        timeout = self._ssh.connect_timeout
        target = f"{dest[0]}:{dest[1]}"
        t0 = time.monotonic()
        try:
            return jump.transport.open_channel("direct-tcpip", dest, ("", 0), timeout=timeout)
        except paramiko.ChannelException as exc:
            why = exc.text or f"channel open failed ({exc.code})"
            raise _ChannelFailed(f"{hop.described} could not connect to "
                                 f"{target}: {why}") from None
        except (paramiko.SSHException, EOFError, OSError) as exc:
            waited = time.monotonic() - t0
            text = str(exc) or type(exc).__name__
            if "timeout" in text.lower():
                text = f"no answer within {waited:.1f}s (ssh.connect_timeout {timeout:g}s)"
            raise _ChannelFailed(f"{hop.described} could not open a "
                                 f"connection to {target}: {text}") from None

    def _connect(self, hop: Hop, parent: _Jump | None) -> paramiko.SSHClient:
        """An SSH client to `hop` (through `parent`'s channel), its host key checked."""
        timeout = self._ssh.connect_timeout
        name = hop.described
        t0 = time.monotonic()
        sock = None
        if parent is not None:
            try:
                sock = self._channel(parent, (hop.host, hop.port))
            except _ChannelFailed as exc:
                raise _Failure(retry=False, host_key=False, reason=str(exc)) from None
        client = paramiko.SSHClient()
        load_known_hosts(client, self._known_hosts)
        client.set_missing_host_key_policy(
            policy_for(self._ssh.host_key_policy, hop.label, self._known_hosts, hop.port, ROLE))
        keys = [str(self._identity)] if self._identity is not None else []
        keys += [k for k in hop.key_files if Path(k).is_file()]
        try:
            client.connect(  # key_filename takes a list (paramiko's docstring; not its stub)
                hostname=hop.host, port=hop.port, username=hop.user, sock=sock,
                key_filename=keys or None,  # type: ignore[arg-type]
                timeout=timeout, banner_timeout=timeout, auth_timeout=timeout,
                channel_timeout=timeout, transport_factory=make_transport,
            )
        except BaseException as exc:
            client.close()
            raise _failure(exc, name, hop, self._known_hosts, timeout,
                           time.monotonic() - t0) from None
        transport = client.get_transport()
        if transport is not None:
            transport.set_keepalive(int(self._ssh.keepalive_s))
        get_logger(node=hop.label).debug("remote.jump", where=hop.where,
                                         duration_s=round(time.monotonic() - t0, 3))
        return client


class _ChannelFailed(Exception):
    pass


def _failure(exc: BaseException, name: str, hop: Hop, known_hosts: Path, timeout: float,
             waited: float) -> _Failure:
    """One jump host's connect failure, worded for the nodes behind it."""
    if isinstance(exc, HostKeyError):
        return _Failure(False, True, f"{name}: {exc.reason}", exc.hint)
    if isinstance(exc, paramiko.BadHostKeyException):
        err = changed_key_error(hop.label, exc, known_hosts, hop.port, ROLE)
        return _Failure(False, True, f"{name}: {err.reason}", err.hint)
    if isinstance(exc, paramiko.AuthenticationException):
        return _Failure(False, False, f"{name}: authentication failed: {exc}",
                        "check the jump host's user (user@ in the jump, User in ~/.ssh/config, "
                        "or ssh.user) and that your key is in its authorized_keys")
    if isinstance(exc, TimeoutError):
        return _Failure(False, False, f"{name}: connecting timed out after {waited:.1f}s "
                        f"(ssh.connect_timeout {timeout:g}s)")
    if isinstance(exc, paramiko.ssh_exception.NoValidConnectionsError):
        reasons = "; ".join(sorted({getattr(e, "strerror", None) or str(e)
                                    for e in exc.errors.values()}))
        return _Failure(True, False, f"{name}: {reasons}")
    if isinstance(exc, (ConnectionRefusedError, ConnectionResetError)):
        return _Failure(True, False, f"{name}: {exc.strerror or exc}")
    if isinstance(exc, paramiko.SSHException):
        text = str(exc)
        if "banner" in text.lower() or "no existing session" in text.lower():
            text = ("accepted the connection but sent no SSH banner or did not finish the "
                    f"handshake (hung or overloaded): gave up after {waited:.1f}s "
                    f"(ssh.connect_timeout {timeout:g}s)")
        return _Failure(False, False, f"{name}: {text}")
    if isinstance(exc, (OSError, EOFError)):
        return _Failure(False, False, f"{name}: {getattr(exc, 'strerror', None) or exc}")
    raise exc
