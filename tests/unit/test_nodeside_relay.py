"""The node-side relay agent, run here as on a node (`python3 <bundle>.pyz relay ...`), over
real TCP on the loopback: the stream arrives whole and checked, a wrong token is refused, a
truncated stream kills the receiving command, and an operator who goes away ends it all."""

from __future__ import annotations

import hashlib
import json
import os
import select
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import nodeside
from tests.children import spawn

TOKEN = "t" * 64


def _line(proc: subprocess.Popen[bytes], timeout: float = 30) -> str:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    assert ready, "no output line in time"
    return proc.stdout.readline().decode()


def _until_json(proc: subprocess.Popen[bytes]) -> dict[str, Any]:
    while True:
        line = _line(proc)
        assert line, "ended without its summary"
        if line.startswith("{"):
            return dict(json.loads(line))


def _popen(*args: str, cwd: Path) -> subprocess.Popen[bytes]:
    return spawn(nodeside.argv("relay", *args), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                 stderr=subprocess.PIPE, cwd=cwd)


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for p in started:
        if p.poll() is None:
            p.kill()
        p.wait(10)
        for f in (p.stdin, p.stdout, p.stderr):
            if f is not None:
                f.close()


def _receiver(tmp: Path, procs: list[subprocess.Popen[bytes]], *cmd: str) -> tuple[Any, int]:
    r = _popen("recv", "--bind", "127.0.0.1", "--accept-timeout", "20", "--", *cmd, cwd=tmp)
    procs.append(r)
    assert r.stdin is not None
    r.stdin.write(TOKEN.encode() + b"\n")
    r.stdin.flush()  # and stays open: the operator is still there
    first = _line(r)
    assert first.startswith("LISTEN ")
    return r, int(first.split()[1])


def _sender(tmp: Path, procs: list[subprocess.Popen[bytes]], port: int, *cmd: str) -> Any:
    s = _popen("send", "--", *cmd, cwd=tmp)
    procs.append(s)
    assert s.stdin is not None
    plan = {"targets": [{"name": "r1", "addr": "127.0.0.1", "port": port, "token": TOKEN}]}
    s.stdin.write(json.dumps(plan).encode() + b"\n")
    s.stdin.flush()
    return s


def test_a_stream_arrives_whole_and_a_wrong_token_is_refused(
        tmp_path: Path, procs: list[subprocess.Popen[bytes]]) -> None:
    payload = os.urandom(3 << 20)
    (tmp_path / "src").write_bytes(payload)
    r, port = _receiver(tmp_path, procs, "sh", "-c", "cat > dst")
    with socket.create_connection(("127.0.0.1", port)) as intruder:
        intruder.sendall(b"x" * len(TOKEN))
        assert intruder.recv(1) == b""  # dropped
    s = _sender(tmp_path, procs, port, "cat", "src")
    sent, got = _until_json(s), _until_json(r)
    assert sent["targets"] == {"r1": "ok"} and sent["exit"] == 0
    assert got["complete"] and got["exit"] == 0 and got["bytes"] == len(payload)
    assert got["sha256"] == sent["sha256"] == hashlib.sha256(payload).hexdigest()
    assert s.wait(20) == 0 and r.wait(20) == 0
    assert (tmp_path / "dst").read_bytes() == payload
    assert r.stderr is not None and b"rejected a connection from 127.0.0.1" in r.stderr.read()


def test_a_source_that_fails_midway_never_completes_the_receiver(
        tmp_path: Path, procs: list[subprocess.Popen[bytes]]) -> None:
    (tmp_path / "src").write_bytes(os.urandom(1 << 20))
    r, port = _receiver(tmp_path, procs, "sh", "-c", "cat > dst; echo finished > done")
    s = _sender(tmp_path, procs, port, "sh", "-c", "head -c 300000 src; exit 3")
    sent, got = _until_json(s), _until_json(r)
    assert sent["exit"] == 3 and sent["targets"]["r1"] == "error: source command exited 3"
    assert got == {"bytes": 300000, "complete": False}
    assert r.wait(20) == 3 and s.wait(20) == 3
    assert not (tmp_path / "done").exists()  # the receiving command was killed, not ended


def test_an_operator_who_goes_away_ends_the_agent_and_its_command(
        tmp_path: Path, procs: list[subprocess.Popen[bytes]]) -> None:
    r, _port = _receiver(tmp_path, procs, "sh", "-c", "cat > dst")
    assert r.stdin is not None
    r.stdin.close()  # the SSH channel closed
    assert r.wait(20) == 125
    assert r.stderr is not None and b"operator went away" in r.stderr.read()


def test_a_command_is_required() -> None:
    res = nodeside.run("relay", "recv", "--bind", "127.0.0.1")
    assert res.returncode == 2 and b"a command is required" in res.stderr
