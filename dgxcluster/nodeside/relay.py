"""Node-side relay agent (Python 3 standard library only; shipped to nodes by dgxcluster,
run as `python3 nodeside-<hash>.pyz relay recv|send ...`).

Streams a command's stdout from one node straight into a command's stdin on other nodes,
over TCP on the fabric, without passing through the operator's machine:

  recv: listen on --bind, print "LISTEN <port>", accept the sender that presents the token,
        pipe the stream into CMD (e.g. `docker load`), exit with CMD's status.
  send: run CMD (e.g. `docker save IMAGE`), stream its stdout to every target at once.

Tokens and targets arrive on stdin, never on the command line. The stream is framed
(`framing.py`: 4-byte length + data; an empty frame ends it, then the sha256 of the
payload), so a truncated stream is detected and the receiving command is killed rather
than fed a partial payload. If the operator goes away (stdin reaches EOF early), the agent kills its
command and exits: nothing is left behind on the node.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import hmac
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable

from . import framing

CHUNK = framing.CHUNK
#: The dispatcher ends this program with os._exit: its stdin watcher may still be blocked
#: in read(), and a normal interpreter shutdown would wait on that read's lock.
HARD_EXIT = True
EXIT_TRUNCATED = 3
EXIT_TARGETS_FAILED = 4
EXIT_ABANDONED = 125


def _log(msg: str) -> None:
    sys.stderr.write(msg + "\n")
    sys.stderr.flush()


def _watch_stdin(child: list[subprocess.Popen[bytes]], done: threading.Event) -> None:
    """Exit (killing the child) if the operator's session ends before we are done."""

    def watch() -> None:
        try:
            while sys.stdin.buffer.read(65536):
                pass
        except OSError:
            pass
        if not done.is_set():
            for c in child:
                with contextlib.suppress(OSError):
                    c.kill()
            _log("relay: operator went away; aborted")
            os._exit(EXIT_ABANDONED)

    threading.Thread(target=watch, daemon=True).start()


def cmd_recv(a: argparse.Namespace) -> int:
    token = sys.stdin.buffer.readline().strip()
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((a.bind, a.port))
    srv.listen(8)
    srv.settimeout(a.accept_timeout)
    print(f"LISTEN {srv.getsockname()[1]}", flush=True)
    children: list[subprocess.Popen[bytes]] = []
    done = threading.Event()
    _watch_stdin(children, done)
    deadline = time.monotonic() + a.accept_timeout
    while True:
        srv.settimeout(max(0.1, deadline - time.monotonic()))
        try:
            conn, peer = srv.accept()
        except TimeoutError:
            _log(f"relay: no sender connected within {a.accept_timeout:g}s")
            return EXIT_TRUNCATED
        conn.settimeout(30)
        try:
            offered = bytes(framing.read_exact(conn.recv_into, len(token)))
        except (EOFError, OSError):
            conn.close()
            continue
        if hmac.compare_digest(offered, token):
            break
        _log(f"relay: rejected a connection from {peer[0]} (bad token)")
        conn.close()
    srv.close()
    conn.settimeout(a.idle_timeout)
    child = subprocess.Popen(a.command, stdin=subprocess.PIPE)
    children.append(child)
    assert child.stdin is not None
    digest = hashlib.sha256()
    total = 0
    t0 = time.monotonic()
    complete = False
    frame = bytearray(CHUNK)
    try:
        while True:
            n = framing.read_length(conn.recv_into)
            if n == 0:
                expected = bytes(framing.read_exact(conn.recv_into, 32))
                complete = hmac.compare_digest(expected, digest.digest())
                if not complete:
                    _log("relay: checksum mismatch")
                break
            if n > CHUNK:
                raise EOFError(f"frame of {n} bytes exceeds {CHUNK}")
            data = framing.read_exact(conn.recv_into, n, frame)
            digest.update(data)
            total += n
            child.stdin.write(data)
    except BrokenPipeError:
        _log("relay: the receiving command exited early")
    except (EOFError, OSError) as exc:
        _log(f"relay: stream broken after {total} bytes: {exc or type(exc).__name__}")
    if not complete:
        child.kill()
        child.wait()
        done.set()
        conn.close()
        print(json.dumps({"bytes": total, "complete": False}), flush=True)
        return EXIT_TRUNCATED
    child.stdin.close()
    rc = child.wait()
    done.set()
    with contextlib.suppress(OSError):
        conn.sendall(b"OK" if rc == 0 else b"NO")
    conn.close()
    print(json.dumps({"bytes": total, "sha256": digest.hexdigest(), "complete": True,
                      "exit": rc, "seconds": round(time.monotonic() - t0, 3)}), flush=True)
    return rc


def _connect(targets: list[dict[str, object]], a: argparse.Namespace,
             status: dict[str, str]) -> dict[str, socket.socket]:
    """A socket per target that answered (its token sent first); the others' errors in status."""
    socks: dict[str, socket.socket] = {}
    for t in targets:
        name = str(t["name"])
        try:
            s = socket.create_connection((str(t["addr"]), int(str(t["port"]))),
                                         timeout=a.connect_timeout)
            s.settimeout(a.idle_timeout)
            s.sendall(str(t["token"]).encode())
            socks[name] = s
            status[name] = "sending"
        except OSError as exc:
            status[name] = f"error: cannot connect to {t['addr']}:{t['port']}: {exc}"
    return socks


def _finish(rc: int, digest: bytes, socks: dict[str, socket.socket], status: dict[str, str],
            send_all: Callable[[bytes], None], finish_timeout: float) -> None:
    """The end frame (sha256) and each target's acknowledgement; or, if the source command
    failed, close every stream so the targets discard what they got."""
    if rc != 0:
        for name, s in socks.items():
            s.close()
            status[name] = f"error: source command exited {rc}"
        return
    send_all(framing.end_frame(digest))
    for name, s in list(socks.items()):
        try:
            s.shutdown(socket.SHUT_WR)
            s.settimeout(finish_timeout)
            ack = s.recv(2)
            status[name] = "ok" if ack == b"OK" else "error: receiving command failed"
        except OSError as exc:
            status[name] = f"error: no acknowledgement: {exc}"
        s.close()


def cmd_send(a: argparse.Namespace) -> int:
    spec = json.loads(sys.stdin.buffer.readline())
    status: dict[str, str] = {}
    socks = _connect(spec["targets"], a, status)
    children: list[subprocess.Popen[bytes]] = []
    done = threading.Event()
    _watch_stdin(children, done)
    child = subprocess.Popen(a.command, stdout=subprocess.PIPE)
    children.append(child)
    assert child.stdout is not None
    digest = hashlib.sha256()
    total = 0
    t0 = last = time.monotonic()

    def send_all(frame: bytes) -> None:
        for name, s in list(socks.items()):
            try:
                s.sendall(frame)
            except OSError as exc:
                status[name] = f"error: stream to target broke: {exc}"
                socks.pop(name).close()

    while True:
        data = child.stdout.read(CHUNK)
        if not data:
            break
        digest.update(data)
        total += len(data)
        send_all(framing.frame(data))
        now = time.monotonic()
        if now - last >= 1.0:
            _log(f"PROGRESS {total}")
            last = now
        if not socks and spec["targets"]:
            child.kill()
            break
    rc = child.wait()
    _finish(rc, digest.digest(), socks, status, send_all, a.finish_timeout)
    done.set()
    print(json.dumps({"bytes": total, "sha256": digest.hexdigest(), "exit": rc,
                      "seconds": round(time.monotonic() - t0, 3), "targets": status}), flush=True)
    if rc != 0:
        return rc
    return 0 if all(v == "ok" for v in status.values()) else EXIT_TARGETS_FAILED


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    p = argparse.ArgumentParser(prog="dgxcluster-relay-agent")
    sub = p.add_subparsers(dest="mode", required=True)
    r = sub.add_parser("recv")
    r.add_argument("--bind", required=True)
    r.add_argument("--port", type=int, default=0)
    r.add_argument("--accept-timeout", type=float, default=60)
    r.add_argument("--idle-timeout", type=float, default=300)
    r.add_argument("command", nargs=argparse.REMAINDER)
    s = sub.add_parser("send")
    s.add_argument("--connect-timeout", type=float, default=30)
    s.add_argument("--idle-timeout", type=float, default=300)
    s.add_argument("--finish-timeout", type=float, default=3600)
    s.add_argument("command", nargs=argparse.REMAINDER)
    a = p.parse_args(argv)
    if a.command[:1] == ["--"]:
        a.command = a.command[1:]
    if not a.command:
        p.error("a command is required after --")
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    return cmd_recv(a) if a.mode == "recv" else cmd_send(a)
