"""The relay agent (nodeside/relay.py), both ends run here over 127.0.0.1: framed, token-gated,
sha256-checked; a wrong token is turned away, a dead target named in the sender's summary."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import IO

from dgxcluster.nodeside import relay as agent

AGENT = agent.__file__


def _recv(out: Path, token: str) -> tuple[subprocess.Popen[bytes], int]:
    p = subprocess.Popen([sys.executable, AGENT, "recv", "--bind", "127.0.0.1",
                          "--accept-timeout", "30", "--", "sh", "-c", 'cat > "$1"', "sh", str(out)],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert p.stdin is not None and p.stdout is not None
    p.stdin.write(token.encode() + b"\n")
    p.stdin.flush()
    line = p.stdout.readline().decode()
    assert line.startswith("LISTEN "), line
    return p, int(line.split()[1])


def _summary(stream: IO[bytes] | None) -> dict[str, object]:
    assert stream is not None
    lines = [ln for ln in stream.read().decode().splitlines() if ln.startswith("{")]
    return json.loads(lines[-1])  # type: ignore[no-any-return]


def _send(src: Path, targets: list[dict[str, object]]) -> subprocess.CompletedProcess[bytes]:
    # the sender's stdin stays open until the summary (EOF earlier means "operator went away")
    p = subprocess.Popen([sys.executable, AGENT, "send", "--connect-timeout", "5", "--",
                          "cat", str(src)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    assert p.stdin is not None and p.stdout is not None
    p.stdin.write(json.dumps({"targets": targets}).encode() + b"\n")
    p.stdin.flush()
    out = p.stdout.read()
    p.stdin.close()
    err = p.stderr.read() if p.stderr else b""
    return subprocess.CompletedProcess(p.args, p.wait(timeout=30), out, err)


def test_bytes_arrive_whole_at_every_target(tmp_path: Path) -> None:
    src = tmp_path / "src.bin"
    src.write_bytes(bytes(range(256)) * 20_000)  # several frames
    ends = {n: _recv(tmp_path / f"{n}.out", f"tok-{n}") for n in ("a", "b")}
    sent = _send(src, [{"name": n, "addr": "127.0.0.1", "port": port, "token": f"tok-{n}"}
                       for n, (_p, port) in ends.items()])
    summary = json.loads(sent.stdout.decode().splitlines()[-1])
    assert sent.returncode == 0, sent.stderr
    assert summary["targets"] == {"a": "ok", "b": "ok"} and summary["exit"] == 0
    assert summary["sha256"] == hashlib.sha256(src.read_bytes()).hexdigest()
    for n, (p, _port) in ends.items():
        assert p.stdin is not None
        p.stdin.close()
        got = _summary(p.stdout)
        assert p.wait(timeout=30) == 0 and got["complete"] is True
        assert (tmp_path / f"{n}.out").read_bytes() == src.read_bytes()


def test_a_wrong_token_is_turned_away_and_an_absent_target_named(tmp_path: Path) -> None:
    src = tmp_path / "src.bin"
    src.write_bytes(b"payload\n" * 1000)
    p, port = _recv(tmp_path / "a.out", "right-token")
    sent = _send(src, [{"name": "a", "addr": "127.0.0.1", "port": port, "token": "wrong-token"},
                       {"name": "gone", "addr": "127.0.0.1", "port": 1, "token": "x"}])
    summary = json.loads(sent.stdout.decode().splitlines()[-1])
    assert sent.returncode == agent.EXIT_TARGETS_FAILED
    assert str(summary["targets"]["gone"]).startswith("error: cannot connect to 127.0.0.1:1")  # type: ignore[index]
    assert str(summary["targets"]["a"]).startswith("error:")  # type: ignore[index]
    p.kill()
    p.wait(timeout=30)
    assert p.stderr is not None and b"rejected a connection" in p.stderr.read()
    assert not (tmp_path / "a.out").exists() or (tmp_path / "a.out").read_bytes() == b""
