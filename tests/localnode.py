"""Nodes as folders on this machine, for unit tests that want the real node-side programs.

`local_nodes(tmp, names)` gives a `FakeConnection` per node whose commands really run here,
as argv (no shell added), with `HOME` set to the node's own folder and `python3` meaning
this interpreter; `put` writes the file there. So the node agents (`nodeside/hfcache.py`)
scan, hash and receive real files. `local_relay` stands in for `core.relay.relay` (sockets
between nodes): it pipes the source command's stdout into each target command's stdin,
optionally spoiling one target's copy on the way (a stream broken in transit).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from dgxcluster.core.relay import RelayResult
from dgxcluster.core.steps import Outcome, Status
from tests.fakes import FakeConnection, Reply


def execute(home: Path, argv: Sequence[str], stdin: bytes | None) -> subprocess.CompletedProcess[bytes]:
    """Run argv here as the node would: HOME is the node's folder, python3 this interpreter."""
    cmd = [sys.executable if argv[0] == "python3" else argv[0], *argv[1:]]
    env = {"HOME": str(home), "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C"}
    return subprocess.run(cmd, input=stdin or b"", capture_output=True, env=env, timeout=60,
                          check=False)


def _local(home: Path) -> Callable[[list[str], bytes | None], Reply]:
    def run(argv: list[str], stdin: bytes | None) -> Reply:
        p = execute(home, argv, stdin)
        return Reply(stdout=p.stdout.decode(errors="replace"),
                     stderr=p.stderr.decode(errors="replace"), exit_code=p.returncode)

    return run


@dataclass
class LocalConnection(FakeConnection):
    """A FakeConnection whose commands run here, in `home`; files put land there too."""

    home: Path = field(default_factory=Path)

    def put(self, data: bytes, path: str, mode: int = 0o644) -> None:
        super().put(data, path, mode)
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        p.chmod(mode)


def local_nodes(tmp: Path, names: Sequence[str]) -> dict[str, LocalConnection]:
    out: dict[str, LocalConnection] = {}
    for name in names:
        home = tmp / name
        home.mkdir(parents=True, exist_ok=True)
        out[name] = LocalConnection(name, home=home)
        out[name].on("", _local(home))
    return out


@dataclass
class LocalRelay:
    """`core.relay.relay`'s interface, with the bytes piped here instead of over sockets."""

    nodes: Mapping[str, LocalConnection]
    #: target -> bytes of a file: that target's next copy has the byte after them flipped
    spoil: dict[str, bytes] = field(default_factory=dict)
    calls: list[tuple[str, list[str]]] = field(default_factory=list)

    def __call__(self, session: object, source: str, source_argv: Sequence[str],
                 targets: Mapping[str, Sequence[str]], **_kw: object) -> RelayResult:
        sent = execute(self.nodes[source].home, source_argv, None)
        assert sent.returncode == 0, sent.stderr
        result = RelayResult(source=source, bytes=len(sent.stdout))
        self.calls.append((source, sorted(targets)))
        for node, argv in targets.items():
            got = sent.stdout
            marker = self.spoil.pop(node, None)
            if marker is not None:
                at = got.index(marker) + len(marker)
                got = got[:at] + bytes([got[at] ^ 0xFF]) + got[at + 1:]
            res = execute(self.nodes[node].home, argv, got)
            status = Status.CHANGED if res.returncode == 0 else Status.FAILED
            detail = "received" if res.returncode == 0 else (
                f"receive failed (exit {res.returncode}): {res.stderr.decode()[-300:].strip()}")
            result.targets[node] = Outcome(node, "relay", status, detail, 0.01,
                                           data={"bytes": len(got)})
        return result
