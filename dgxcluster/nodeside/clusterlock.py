"""Node-side cluster lock (Python 3 standard library only; shipped to nodes by dgxcluster,
run as `python3 nodeside-<hash>.pyz clusterlock NAME HOLDER`).

The lock is a listening UNIX socket at an *abstract* address (`\\0dgxcluster/<NAME>/lock`):
the kernel lets one socket at a time hold an address in a network namespace, whoever owns
it, so every user of the head node (their SSH logins share its host network) contends for
the same lock; there is no file, so no directory whose mode or owner suits one user and not
another, nothing for a crash to leave behind, nothing another user could not remove. The
address is freed by the kernel when this process ends, however it ends.

  free:  bind, print "LOCKED", then answer anyone who connects with HOLDER (who holds it,
         since when); exit when stdin reaches EOF (the operator's SSH channel closed:
         released, finished or killed);
  held:  connect to the holder, print "HELD <its text>", exit 75 (after `--wait` seconds of
         trying, as `flock -w` would).
"""

from __future__ import annotations

import argparse
import errno
import getpass
import os
import select
import socket
import sys
import time

HELD_EXIT = 75
#: The dispatcher ends this program with os._exit (its stdin may still be open).
HARD_EXIT = True


def address(name: str) -> str:
    return f"\0dgxcluster/{name}/lock"


def _who_holds(addr: str) -> str | None:
    """The holder's text; None if nobody listens any more (it just ended)."""
    c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    c.settimeout(2.0)
    try:
        c.connect(addr)
        data = b""
        while len(data) < 4096 and (chunk := c.recv(4096)):
            data += chunk
        return data.decode("utf-8", "replace").strip() or "another dgxcluster run"
    except (ConnectionRefusedError, FileNotFoundError):
        return None
    except OSError as exc:
        return f"another dgxcluster run (it did not say who: {exc})"
    finally:
        c.close()


def _take(addr: str, wait_s: float) -> socket.socket | str:
    """The bound socket, or the holder's text."""
    deadline = time.monotonic() + wait_s
    while True:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.bind(addr)
            s.listen(16)
            return s
        except OSError as exc:
            s.close()
            if exc.errno != errno.EADDRINUSE:
                raise
        holder = _who_holds(addr)
        if holder is not None and time.monotonic() >= deadline:
            return holder
        time.sleep(0.1)


def _serve(srv: socket.socket, text: bytes) -> None:
    """Tell whoever asks who holds the lock, until stdin reaches EOF."""
    stdin = sys.stdin.buffer.fileno()
    while True:
        ready, _, _ = select.select([srv, stdin], [], [])
        if stdin in ready and not os.read(stdin, 65536):
            return
        if srv in ready:
            conn, _ = srv.accept()
            try:
                conn.settimeout(1.0)
                conn.sendall(text)
            except OSError:
                pass
            finally:
                conn.close()


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="clusterlock")
    ap.add_argument("name", help="the cluster's name")
    ap.add_argument("holder", help="who takes it: shown to anyone refused")
    ap.add_argument("--wait", type=float, default=2.0, help="seconds to keep trying")
    a = ap.parse_args(argv)
    text = f"{a.holder} (ssh user {getpass.getuser()} on {socket.gethostname()})"
    got = _take(address(a.name), a.wait)
    if isinstance(got, str):
        print(f"HELD {got}", flush=True)
        return HELD_EXIT
    print("LOCKED", flush=True)
    try:
        _serve(got, text.encode())
    finally:
        got.close()
    return 0
