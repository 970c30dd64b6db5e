"""Hand a command to the warm server, when one is up; the console script's first step.

A cold `dgxcluster` spends ~0.3 s importing (paramiko and cryptography, pydantic and the
inventory schema, typer) before it opens a connection: most of a `status` or `exec` that
talks to two nodes. `dgxcluster warm start` leaves a server that has imported everything
once and forks a worker per command, as Gradle's and Bazel's daemons do for the JVM; this
module is the client side: it imports only what Python's start has loaded anyway (os, sys,
socket, signal, marshal: no json, pathlib or typing, ~40 ms on a small machine), so that
asking costs a few ms. The worker gets this
process's stdin, stdout and stderr (passed over the Unix socket as file descriptors, so
output streams straight to the terminal or pipe), its argv, working directory, umask and
environment, and runs the command exactly as a cold start would: its own SSH connections
with the same host-key checks, its own exit code. Signals sent to this process (Ctrl-C,
SIGTERM, SIGHUP) are passed on to the worker's process group; if this process dies the
worker is killed, as the command would have died with it.

Nothing is shared between commands but the imported code: no connection, no inventory, no
answer is cached. A server started from another checkout or interpreter, or whose code
changed on disk since it started, is not used (the command runs here and says nothing).
"""

from __future__ import annotations

import marshal
import os
import signal
import socket
import struct
import sys

TYPE_CHECKING = False  # as typing's, without importing typing (~8 ms); mypy knows the name
if TYPE_CHECKING:
    from typing import Any

#: Where the socket is: set it to another path (or to empty, meaning "no warm server").
ENV_SOCKET = "DGXCLUSTER_WARM_SOCKET"
#: A file to which the client writes the worker's exit and peak RSS (for benchmarks).
ENV_REPORT = "DGXCLUSTER_WARM_REPORT"
#: Signals passed on to the worker: those a terminal sends to its foreground process group go
#: to the worker's group (its own children included, as for a cold start), the rest to it alone.
TO_GROUP = (signal.SIGINT, signal.SIGQUIT, signal.SIGWINCH)
TO_WORKER = (signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)


def socket_path() -> str | None:
    """The warm server's socket: $DGXCLUSTER_WARM_SOCKET, else under the user's cache dir."""
    if ENV_SOCKET in os.environ:
        return os.environ[ENV_SOCKET] or None
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    # its own directory, 0700: the cache's dgxcluster/ is made by others with the umask's mode
    return os.path.join(cache, "dgxcluster", "warm", "warm.sock")


def package_root() -> str:
    """This checkout's package directory: a server from another checkout must not serve it."""
    return os.path.dirname(os.path.dirname(os.path.realpath(__file__)))


#: A message: its length (4 bytes, big-endian), then the dict in `marshal`'s format. Both ends
#: are the same Python (the server declines another interpreter) of the same user
#: (SO_PEERCRED), so marshal, which Python's start has loaded already, needs no import.
_LENGTH = struct.Struct(">I")
MAX_MESSAGE = 16 << 20


def send_line(sock: socket.socket, obj: dict[str, Any], fds: list[int] | None = None) -> None:
    """One message (the file descriptors ride on its first byte)."""
    body = marshal.dumps(obj)
    data = _LENGTH.pack(len(body)) + body
    sent = socket.send_fds(sock, [data], fds) if fds else 0
    if sent < len(data):  # sendall(b"") still calls send(): EPIPE if the server answered
        sock.sendall(data[sent:])


def read_line(sock: socket.socket, first: bytes = b"") -> dict[str, Any] | None:
    """The next message, or None when the other end closed first; ValueError when it is not
    one."""
    buf = first
    while len(buf) < _LENGTH.size or len(buf) < _LENGTH.size + _LENGTH.unpack_from(buf)[0]:
        if len(buf) >= _LENGTH.size and _LENGTH.unpack_from(buf)[0] > MAX_MESSAGE:
            raise ValueError("message too large")
        chunk = sock.recv(65536)
        if not chunk:
            return None
        buf += chunk
    size = _LENGTH.unpack_from(buf)[0]
    value = marshal.loads(buf[_LENGTH.size:_LENGTH.size + size])  # noqa: S302 - see _LENGTH
    return value if isinstance(value, dict) else None


def connect(path: str) -> socket.socket | None:
    """A connection to the server at `path`, or None when none answers there."""
    if not os.path.exists(path):
        return None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(path)
    except OSError:
        sock.close()
        return None
    return sock


def request(argv: list[str]) -> dict[str, Any]:
    """What the worker needs to run `argv` as this process would."""
    return {
        "op": "run",
        "argv": argv,
        "cwd": os.getcwd(),
        "env": dict(os.environ),
        "umask": _umask(),
        "root": package_root(),
        "executable": sys.executable,
        "encoding": [sys.stdout.encoding, sys.stdout.errors],
        # What a cold start would have inherited: signals ignored (`nohup`, a background
        # job) stay ignored, and Ctrl-C typed on our terminal reaches the worker through us.
        "ignored": [int(s) for s in (*TO_GROUP, *TO_WORKER)
                    if signal.getsignal(s) == signal.SIG_IGN],
        "pgrp": os.getpgrp(),
    }


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def handoff(argv: list[str]) -> int | None:
    """Run `argv` in a warm worker and return its exit code; None when no server took it."""
    path = socket_path()
    sock = connect(path) if path else None
    if sock is None:
        return None
    worker = _Forwarder()
    try:
        send_line(sock, request(argv), [0, 1, 2])
        reply = read_line(sock)
    except (OSError, ValueError, EOFError, TypeError):  # no server of this version there
        reply = None
    if reply is None or "pid" not in reply:
        sock.close()
        worker.restore()
        return None  # no worker started (another checkout, stale code): run here
    worker.started(int(reply["pid"]))
    try:
        final = read_line(sock)
    except (OSError, ValueError, EOFError, TypeError):
        final = None
    if final is None:
        sys.stderr.write("dgxcluster: the warm server's worker ended without an exit code; "
                         "run `dgxcluster warm stop` and retry (it then runs cold)\n")
        return 1
    report = os.environ.get(ENV_REPORT)
    if report:
        import json

        with open(report, "w") as f:
            json.dump(final, f)
    code = int(final["exit"])
    if code < 0:  # killed by a signal: die of the same one, as the shell expects
        signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
        return 128 - code
    return code


class _Forwarder:
    """Signals to this process go to the worker's process group; any that arrive before the
    worker exists are held and sent once it does."""

    def __init__(self) -> None:
        self._pid: int | None = None
        self._held: list[int] = []
        self._old = {sig: signal.signal(sig, self._on) for sig in (*TO_GROUP, *TO_WORKER)
                     if signal.getsignal(sig) != signal.SIG_IGN}

    def _on(self, signum: int, _frame: object) -> None:
        if self._pid is None:
            self._held.append(signum)
            return
        try:
            if signum in TO_GROUP:
                os.killpg(self._pid, signum)
            else:
                os.kill(self._pid, signum)
        except OSError:
            pass

    def started(self, pid: int) -> None:
        self._pid = pid
        for signum in self._held:
            self._on(signum, None)

    def restore(self) -> None:
        """No worker: put the handlers back and deliver what arrived meanwhile here."""
        for sig, old in self._old.items():
            signal.signal(sig, old if old is not None else signal.SIG_DFL)
        for signum in self._held:
            os.kill(os.getpid(), signum)


def run() -> None:
    """Console-script entry point: a warm worker runs the command if a server is up, else
    this process does (`dgxcluster warm ...` itself always runs here)."""
    if sys.argv[1:2] != ["warm"]:
        code = handoff(sys.argv)
        if code is not None:
            sys.exit(code)
    from dgxcluster.cli.main import run as run_here

    run_here()
