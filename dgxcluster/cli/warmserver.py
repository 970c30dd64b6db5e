"""The warm server: imports all of dgxcluster once, then forks a worker per command.

Started detached by `dgxcluster warm start` (`python -m dgxcluster.cli.warmserver`). It stays
single-threaded so that forking is safe, accepts only its own user (SO_PEERCRED) on a socket
in a 0700 directory, and exits after `--idle` seconds without a command, when its socket is
removed or replaced, when asked (`warm stop`), or when its code changed on disk (the next
command then runs cold). Per command it forks a *waiter*, which forks the *worker*: the
worker becomes the command (the client's fds as 0/1/2, its cwd, umask, environment and
argv) and the waiter reports the worker's exit status and peak RSS to the client, or kills
the worker's process group if the client goes away first. See `dgxcluster.cli.warm`.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib
import os
import pkgutil
import select
import signal
import socket
import struct
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from dgxcluster.cli import state
from dgxcluster.cli.warm import package_root, read_line, send_line

if TYPE_CHECKING:
    from typer import _click as click  # typer 0.29 carries its own click

#: Not imported ahead: shipped to nodes as files, or the entry points themselves.
_SKIP = (".nodeside", ".__main__", ".cli.warmserver")


def preload() -> int:
    """Import every dgxcluster module (and so everything they import); how many there are."""
    import dgxcluster

    names = [m.name for m in pkgutil.walk_packages(dgxcluster.__path__, "dgxcluster.")
             if not any(skip in m.name for skip in _SKIP)]
    for name in names:
        importlib.import_module(name)
    return len(names)


def code_stamp(root: str) -> tuple[int, int]:
    """(files, newest mtime) of the package's Python files: any edit or upgrade changes it."""
    count, newest = 0, 0
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            if f.endswith(".py"):
                count += 1
                newest = max(newest, os.stat(os.path.join(dirpath, f)).st_mtime_ns)
    return count, newest


def installed_stamp() -> tuple[int, ...]:
    """The mtimes of the import path's site-packages directories: installing or upgrading a
    library (paramiko, pydantic, ...) adds and removes entries there, so the server stops
    serving code older than what a cold start would import. (Only those: the checkout's own
    root is on the path too, and files come and go there.)"""
    stamps = []
    for entry in sys.path:
        if entry.endswith(("site-packages", "dist-packages")):
            with contextlib.suppress(OSError):
                stamps.append(os.stat(entry).st_mtime_ns)
    return tuple(stamps)


def prepare_dir(path: Path) -> None:
    """The socket's directory, created 0700; refused when another user owns it or can enter."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = path.parent.stat()
    if st.st_uid != os.getuid() or st.st_mode & 0o077:
        raise SystemExit(f"{path.parent}: must be owned by uid {os.getuid()} and mode 0700 "
                         f"(it is uid {st.st_uid}, mode {st.st_mode & 0o777:o})")


def bind(path: Path) -> socket.socket:
    """Listen at `path`, bound under a temporary name and renamed, so a client never finds a
    socket that does not answer yet."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(tmp))
    os.chmod(tmp, 0o600)
    sock.listen(64)
    os.replace(tmp, path)
    return sock


def peer_uid(conn: socket.socket) -> int:
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return int(struct.unpack("3i", creds)[1])


class Server:
    """The accept loop and its bookkeeping (what `warm status` reports)."""

    def __init__(self, path: Path, idle: int) -> None:
        self.path, self.idle = path, idle
        self.root = package_root()
        self.modules = preload()
        self.command = _click_command()
        gc.freeze()  # what is imported is never collected: a worker's GC leaves those pages shared
        self.stamp = self._stamp()
        self.started = time.time()
        self.served = 0
        self.last = time.monotonic()
        if threading.active_count() != 1:  # forking a threaded process can deadlock
            raise SystemExit("warm server: an import started a thread; not safe to fork")
        self.listener = bind(path)
        self.inode = path.stat().st_ino

    def loop(self) -> None:
        signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # waiters are reaped by the kernel
        while True:
            ready, _, _ = select.select([self.listener], [], [], 2.0)
            if ready:
                conn, _ = self.listener.accept()
                with conn:
                    if self.handle(conn):
                        break
                self.last = time.monotonic()
            elif time.monotonic() - self.last > self.idle or not self._own_socket():
                break
        self.close()

    def _stamp(self) -> tuple[object, ...]:
        return (code_stamp(self.root), installed_stamp())

    def _own_socket(self) -> bool:
        try:
            return self.path.stat().st_ino == self.inode
        except OSError:
            return False

    def close(self) -> None:
        if self._own_socket():
            with contextlib.suppress(OSError):
                self.path.unlink()
        self.listener.close()

    def status(self) -> dict[str, Any]:
        return {"pid": os.getpid(), "since": self.started, "served": self.served,
                "idle_limit_s": self.idle, "idle_s": round(time.monotonic() - self.last, 1),
                "modules": self.modules, "root": self.root, "executable": sys.executable,
                "stale": self._stamp() != self.stamp}

    def handle(self, conn: socket.socket) -> bool:
        """Serve one connection; True when the server should stop."""
        if peer_uid(conn) != os.getuid():
            return False
        conn.settimeout(5)
        fds: list[int] = []
        try:
            data, fds, _flags, _addr = socket.recv_fds(conn, 65536, 3)
            msg = read_line(conn, data) if data else None
        except (OSError, ValueError, EOFError, TypeError):  # not a message of ours
            msg = None
        try:
            if msg is None:
                return False
            op = msg.get("op")
            if op == "ping":
                send_line(conn, self.status())
                return False
            if op == "stop":
                send_line(conn, {"stopped": os.getpid()})
                return True
            if op != "run" or len(fds) != 3:
                return False
            if msg.get("root") != self.root or msg.get("executable") != sys.executable:
                send_line(conn, {"declined": "another checkout or interpreter"})
                return False
            if self._stamp() != self.stamp:
                send_line(conn, {"declined": "code changed since the server started"})
                return True
            conn.settimeout(None)
            try:
                pid = os.fork()
            except OSError as e:  # out of processes or memory: the command runs cold
                send_line(conn, {"declined": f"fork: {e}"})
                return False
            if pid == 0:
                self.listener.close()
                _waiter(conn, fds, msg, self.command)
            self.served += 1
            return False
        finally:
            for fd in fds:
                os.close(fd)


def _click_command() -> click.Command:
    """The CLI's click command, built once: typer builds it on every call (~50 ms)."""
    import typer.main

    from dgxcluster.cli.main import app

    return typer.main.get_command(app)


def prog_name(argv0: str) -> str:
    """What usage lines call the program, as click would have named the client."""
    if argv0.endswith("__main__.py"):
        return "python -m dgxcluster"
    return os.path.basename(argv0) or "dgxcluster"


def _waiter(conn: socket.socket, fds: list[int], msg: dict[str, Any],
            command: click.Command) -> NoReturn:
    """Fork the worker, tell the client its pid, report how it ended (or kill it when the
    client goes away first)."""
    try:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        pid = os.fork()
        if pid == 0:
            _worker(conn, fds, msg, command)
        with contextlib.suppress(OSError):
            os.setpgid(pid, pid)  # also done by the worker: whichever runs first
        for fd in fds:
            os.close(fd)
        send_line(conn, {"pid": pid})
        pidfd = os.pidfd_open(pid)
        while True:
            ready, _, _ = select.select([conn.fileno(), pidfd], [], [])
            if pidfd in ready:
                break
            if not conn.recv(4096):  # the client died: so does its command
                with contextlib.suppress(OSError):
                    os.killpg(pid, signal.SIGKILL)
                break
        _, status, usage = os.wait4(pid, 0)
        with contextlib.suppress(OSError):
            send_line(conn, {"exit": os.waitstatus_to_exitcode(status),
                             "maxrss_kb": usage.ru_maxrss})
    finally:
        os._exit(0)


def _worker(conn: socket.socket, fds: list[int], msg: dict[str, Any],
            command: click.Command) -> NoReturn:
    """Become the command: the client's fds, cwd, umask, environment and argv."""
    code = 1
    try:
        gc.enable()
        conn.close()
        os.setpgid(0, 0)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1,
                    signal.SIGUSR2, signal.SIGWINCH):
            signal.signal(sig, signal.SIG_DFL)
        for sig in msg.get("ignored", []):
            signal.signal(sig, signal.SIG_IGN)
        state.TERMINAL_PGRP = int(msg["pgrp"])
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        os.chdir(msg["cwd"])
        os.umask(int(msg["umask"]))
        os.environ.clear()
        os.environ.update(msg["env"])
        sys.argv = list(msg["argv"])
        encoding, errors = msg["encoding"]
        sys.stdin = open(0, closefd=False, encoding=encoding)  # noqa: SIM115 - process-long
        sys.stdout = open(1, "w", buffering=1 if os.isatty(1) else -1,  # noqa: SIM115
                          encoding=encoding, errors=errors, closefd=False)
        sys.stderr = open(2, "w", buffering=1, encoding=encoding,  # noqa: SIM115
                          errors="backslashreplace", closefd=False)
        command.main(args=sys.argv[1:], prog_name=prog_name(sys.argv[0]))
        code = 0
    except SystemExit as e:
        code = _exit_code(e.code)
    except BaseException:
        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code)


def _exit_code(value: object) -> int:
    if value is None:
        return 0
    if isinstance(value, int):
        return value
    print(value, file=sys.stderr)
    return 1


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m dgxcluster.cli.warmserver")
    ap.add_argument("--socket", required=True, type=Path)
    ap.add_argument("--idle", type=int, default=1800, help="seconds without a command")
    a = ap.parse_args()
    prepare_dir(a.socket)
    gc.disable()  # no holes in the imported objects' pages (Python's gc.freeze recipe)
    Server(a.socket, a.idle).loop()


if __name__ == "__main__":
    main()
