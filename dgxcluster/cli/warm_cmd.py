"""`dgxcluster warm start|stop|status`: a server that keeps dgxcluster imported between commands."""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from dgxcluster.cli.state import errors_to_exit

warm_app = typer.Typer(
    name="warm",
    help=(
        "Keep dgxcluster's code loaded between commands, so each command starts in ~0.05 s "
        "instead of ~0.3-0.5 s. While a warm server runs, every `dgxcluster` command of this "
        "user and checkout is forked from it: same output, exit codes, host-key checks and "
        "fresh SSH connections as a cold start (nothing but imported code is shared). It "
        "stops after --idle without a command, on `warm stop`, or when the code on disk "
        "changes. Socket: $DGXCLUSTER_WARM_SOCKET, else ~/.cache/dgxcluster/warm/warm.sock (0700 "
        "directory, this user only)."
    ),
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    app.add_typer(warm_app, name="warm")


def _socket() -> Path:
    from dgxcluster.cli.warm import ENV_SOCKET, socket_path
    from dgxcluster.errors import UsageError

    path = socket_path()
    if path is None:
        raise UsageError(f"{ENV_SOCKET} is set empty, which turns the warm server off")
    return Path(path)


def _ask(path: Path, op: str) -> dict[str, Any] | None:
    """The server's answer to `op` ("ping", "stop"), or None when none answers at `path`."""
    from dgxcluster.cli.warm import connect, read_line, send_line

    sock = connect(str(path))
    if sock is None:
        return None
    with sock:
        try:
            send_line(sock, {"op": op}, [])
            return read_line(sock)
        except (OSError, ValueError, EOFError, TypeError):
            return None


def _ping(path: Path) -> dict[str, Any] | None:
    """The server's status at `path`, or None when none answers."""
    return _ask(path, "ping")


def _print(doc: dict[str, Any], text: str, json_out: bool) -> None:
    sys.stdout.write((json.dumps(doc, indent=2) if json_out else text) + "\n")


JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON.")]


@warm_app.command("start")
@errors_to_exit
def start_cmd(
    idle: Annotated[str, typer.Option(
        "--idle", help="Stop after this long without a command (e.g. 30m, 8h).")] = "30m",
    json_out: JsonOpt = False,
) -> None:
    """Start the warm server (unchanged if one of this checkout already runs)."""
    from dgxcluster.cli.warm import package_root
    from dgxcluster.core.durations import parse_duration
    from dgxcluster.errors import UsageError

    try:
        idle_s = parse_duration(idle)
    except ValueError as e:
        raise UsageError(f"--idle: {e}") from None
    if not hasattr(os, "pidfd_open") or not hasattr(socket, "SO_PEERCRED"):
        raise UsageError(f"warm needs Linux 5.3+ (pidfd_open, SO_PEERCRED); this is "
                         f"{sys.platform}: commands run cold here, as they do without it")
    path = _socket()
    now = _ping(path)
    if now and now.get("root") == package_root() and not now.get("stale"):
        _print({"status": "unchanged", **now},
               f"warm server unchanged: pid {now['pid']} at {path}", json_out)
        return
    pid = _launch(path, idle_s)
    doc = _ping(path) or {"pid": pid}
    replaced = f" (replaced pid {now['pid']} of {now.get('root')})" if now else ""
    _print({"status": "changed", **doc},
           f"warm server started: pid {pid} at {path}, stops after {idle} idle{replaced}",
           json_out)


def _launch(path: Path, idle_s: int) -> int:
    """Start the server detached and wait until it answers; its pid."""
    import subprocess

    from dgxcluster.cli.warmserver import prepare_dir
    from dgxcluster.errors import DgxClusterError

    try:
        prepare_dir(path)
    except SystemExit as e:
        raise DgxClusterError(f"warm server: {e}") from None
    log = path.with_name("warm.log")
    with open(log, "wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "dgxcluster.cli.warmserver", "--socket", str(path),
             "--idle", str(idle_s)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
            start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        now = _ping(path)
        if now and now.get("pid") == proc.pid:
            return proc.pid
        if proc.poll() is not None:
            tail = log.read_text(errors="replace").strip().splitlines()[-5:]
            raise DgxClusterError(f"warm server exited ({proc.returncode}) before it answered: "
                                  + " | ".join(tail) + f" (log: {log})")
        time.sleep(0.1)
    proc.kill()
    raise DgxClusterError(f"warm server did not answer within 60 s (log: {log})")


@warm_app.command("stop")
@errors_to_exit
def stop_cmd(json_out: JsonOpt = False) -> None:
    """Stop the warm server; commands already running finish as they are."""
    path = _socket()
    reply = _ask(path, "stop")
    if reply is None:
        _print({"status": "unchanged", "running": False}, f"no warm server at {path}", json_out)
        return
    for _ in range(50):
        if not path.exists():
            break
        time.sleep(0.1)
    _print({"status": "changed", "stopped": reply["stopped"]},
           f"warm server stopped: pid {reply['stopped']}", json_out)


@warm_app.command("status")
@errors_to_exit
def status_cmd(json_out: JsonOpt = False) -> None:
    """Show whether a warm server runs, for which checkout, and how many commands it served."""
    from dgxcluster.cli.warm import package_root

    path = _socket()
    now = _ping(path)
    if now is None:
        _print({"running": False, "socket": str(path)}, f"no warm server at {path}", json_out)
        return
    mine = now.get("root") == package_root()
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(now["since"])))
    notes = [] if mine else [f"serves another checkout ({now.get('root')}): not used here"]
    if now.get("stale"):
        notes.append("code changed on disk: the next command stops it and runs cold")
    text = (f"warm server pid {now['pid']} at {path}, since {since}, {now['served']} "
            f"command(s) served, idle {now['idle_s']:.0f} s of {now['idle_limit_s']} s")
    _print({"running": True, "socket": str(path), "used_here": mine and not now.get("stale"),
            **now}, "\n".join([text, *notes]), json_out)
