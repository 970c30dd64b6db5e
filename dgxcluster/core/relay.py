"""Orchestrate a node-to-node stream: one source command's stdout into commands on many peers.

The operator only starts the agents (over the SSH connections it already holds) and hands
them one-time tokens on stdin; the bytes flow source -> peers directly over the fabric, to
all peers at once. Every peer's outcome is reported separately.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, BinaryIO, cast

from dgxcluster.core.nodepaths import NodePaths
from dgxcluster.core.progress import NullProgress, Progress
from dgxcluster.core.session import Session
from dgxcluster.core.units import human_bytes
from dgxcluster.errors import DgxClusterError, StepError
from dgxcluster.remote.command import Argv
from dgxcluster.remote.connection import Connection
from dgxcluster.remote.result import Result


def agent_source() -> bytes:
    return resources.files("dgxcluster.nodeside").joinpath("relay.py").read_bytes()


def agent_path(paths: NodePaths) -> str:
    digest = hashlib.sha256(agent_source()).hexdigest()[:12]
    return paths.bin_file(f"relay-agent-{digest}.py")


def ensure_agent(conn: Connection, paths: NodePaths) -> str:
    """Put the agent on the node once (content-addressed path); return its path."""
    path = agent_path(paths)
    if conn.run(["test", "-f", path]).exit_code != 0:
        conn.put(agent_source(), path, mode=0o700)
    return path


class HeldOpen:
    """stdin for an agent: a first line, then stays open until released.

    While the operator holds the SSH channel, the agent's stdin is open; if the operator
    dies or gives up, the channel closes, stdin hits EOF, and the agent cleans up.
    """

    def __init__(self, first: bytes) -> None:
        self._first: bytes | None = first
        self.released = threading.Event()

    def read(self, n: int = -1) -> bytes:
        if self._first is not None:
            data, self._first = self._first, None
            return data
        self.released.wait()
        return b""


@dataclass
class TargetOutcome:
    node: str
    ok: bool
    detail: str
    bytes: int = 0
    seconds: float = 0.0


@dataclass
class RelayResult:
    source: str
    bytes: int = 0
    sha256: str = ""
    seconds: float = 0.0
    targets: dict[str, TargetOutcome] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(t.ok for t in self.targets.values())

    @property
    def gbytes_per_s(self) -> float:
        return self.bytes / self.seconds / 1e9 if self.seconds else 0.0


@dataclass
class _Receiver:
    node: str
    token: str
    stdin: HeldOpen
    listening: threading.Event = field(default_factory=threading.Event)
    port: int | None = None
    result: Result | None = None
    error: BaseException | None = None
    thread: threading.Thread | None = None


def relay(
    session: Session,
    source: str,
    source_argv: Argv,
    targets: Mapping[str, Argv],
    *,
    timeout: float = 3600.0,
    progress: Progress | None = None,
    step: str = "relay",
    idle_timeout: float | None = None,
    finish_timeout: float | None = None,
    paths: Mapping[str, NodePaths] | None = None,
) -> RelayResult:
    """Stream `source_argv`'s stdout on `source` into each target's argv, peers in parallel.

    `idle_timeout`: seconds the source lets a peer's stream make no progress before it
    drops that peer (agent default 300); receivers wait twice that, so a healthy peer is
    never the one to give up while the source is stalled on a dead one. `finish_timeout`:
    seconds the source waits for each peer's command to finish after the last byte (agent
    default 3600). A dropped peer is then waited for only 2 x `idle_timeout` +
    connect_timeout more, not the whole `timeout`. `paths`: the nodes' NodePaths when the
    caller already has them (saves a round trip).
    """
    prog = progress or NullProgress()
    knobs: list[str] = []
    recv_knobs: list[str] = []
    if idle_timeout is not None:
        knobs += ["--idle-timeout", f"{idle_timeout:g}"]
        recv_knobs += ["--idle-timeout", f"{2 * idle_timeout:g}"]
    inv = session.inventory
    cluster = session.cluster
    nodes = [source, *targets]
    known = dict(paths or {})

    def prepare(c: Connection) -> str:
        p = known.get(c.node) or NodePaths.resolve(c, inv.state_dir, inv.cluster)
        return ensure_agent(c, p)

    agents = cluster.map(prepare, nodes)
    result = RelayResult(source=source)
    if source in agents.errors:
        raise StepError(step, f"cannot prepare the source: {agents.errors[source]}", node=source)
    for node, err in agents.errors.items():
        result.targets[node] = TargetOutcome(node, False, f"cannot prepare: {err}")
    receivers: dict[str, _Receiver] = {}
    try:
        for node, argv in targets.items():
            if node in result.targets:
                continue
            receivers[node] = _start_receiver(
                cluster.conn(node), agents.values[node], str(inv.node(node).fabric_ip), argv,
                timeout, prog, recv_knobs,
            )
        wait_until = time.monotonic() + inv.ssh.connect_timeout + 30
        for r in receivers.values():
            while not r.listening.wait(0.2):
                if r.thread is not None and not r.thread.is_alive():
                    break
                if time.monotonic() > wait_until:
                    break
        plan = [
            {"name": node, "addr": str(inv.node(node).fabric_ip), "port": r.port, "token": r.token}
            for node, r in receivers.items()
            if r.port is not None
        ]
        send_in = HeldOpen(json.dumps({"targets": plan}).encode() + b"\n")
        prog.status(source, f"sending to {len(plan)} peer(s)")

        def on_line(stream: str, line: str) -> None:
            if stream == "stderr" and line.startswith("PROGRESS "):
                sent = int(line.split()[1])
                prog.status(source, f"sent {human_bytes(sent)}")
            elif _is_summary(stream, line, "targets"):
                send_in.released.set()  # the agent is done: end its stdin now, not at exit

        try:
            finish = ["--finish-timeout", f"{finish_timeout:g}"] if finish_timeout is not None else []
            sres = cluster.conn(source).run(
                ["python3", agents.values[source], "send", *knobs, *finish, "--", *source_argv],
                stdin=cast(BinaryIO, send_in), timeout=timeout, on_line=on_line,
            )
        finally:
            send_in.released.set()
        summary = _last_json(sres.stdout)
        result.bytes = int(summary.get("bytes", 0))
        result.sha256 = str(summary.get("sha256", ""))
        result.seconds = float(summary.get("seconds", 0.0))
        if summary.get("exit", sres.exit_code) not in (0, None) or (sres.exit_code != 0 and not summary):
            raise StepError(step, f"source command failed ({sres.exit_code}): "
                            f"{_tail(sres.stderr)}", node=source)
        dropped_wait = 2 * (idle_timeout or 300.0) + inv.ssh.connect_timeout
        sender_view = cast(Mapping[str, str], summary.get("targets", {}))
        for r in receivers.values():
            if r.thread is not None:
                dropped = str(sender_view.get(r.node, "")).startswith("error")
                r.thread.join(min(timeout, dropped_wait) if dropped else timeout)
            result.targets[r.node] = _receiver_outcome(r, summary)
    finally:
        for r in receivers.values():
            r.stdin.released.set()
    return result


def _start_receiver(conn: Connection, agent: str, bind: str, argv: Argv, timeout: float,
                    prog: Progress, knobs: Sequence[str] = ()) -> _Receiver:
    token = secrets.token_hex(32)
    r = _Receiver(node=conn.node, token=token, stdin=HeldOpen(token.encode() + b"\n"))

    def on_line(stream: str, line: str) -> None:
        if stream == "stdout" and line.startswith("LISTEN "):
            r.port = int(line.split()[1])
            r.listening.set()
            prog.status(conn.node, "receiving")
        elif _is_summary(stream, line, "complete"):
            r.stdin.released.set()

    def run() -> None:
        try:
            r.result = conn.run(
                ["python3", agent, "recv", "--bind", bind, *knobs, "--", *argv],
                stdin=cast(BinaryIO, r.stdin), timeout=timeout, on_line=on_line,
            )
        except (DgxClusterError, OSError) as exc:
            r.error = exc
        finally:
            r.listening.set()
            r.stdin.released.set()

    r.thread = threading.Thread(target=run, daemon=True, name=f"relay-recv-{conn.node}")
    r.thread.start()
    return r


def _receiver_outcome(r: _Receiver, summary: Mapping[str, Any]) -> TargetOutcome:
    sender_view = cast(Mapping[str, str], summary.get("targets", {})).get(r.node, "")
    if r.error is not None:
        return TargetOutcome(r.node, False, str(r.error))
    if r.result is None:
        return TargetOutcome(r.node, False, "receiver did not finish")
    info = _last_json(r.result.stdout)
    if r.result.exit_code == 0 and info.get("complete"):
        return TargetOutcome(r.node, True, "received", int(info.get("bytes", 0)),
                             float(info.get("seconds", 0.0)))
    why = _tail(r.result.stderr) or sender_view or f"exit {r.result.exit_code}"
    return TargetOutcome(r.node, False, f"receive failed (exit {r.result.exit_code}): {why}",
                         int(info.get("bytes", 0)))


def _is_summary(stream: str, line: str, key: str) -> bool:
    """The agent's last line (a JSON summary, printed once its work is done).

    Releasing the agent's stdin on it, rather than when the SSH command returns, saves the
    transport's wait for the stdin feeder (about a second per relay).
    """
    if stream != "stdout" or not line.startswith('{"bytes"'):
        return False
    try:
        return key in json.loads(line)
    except ValueError:
        return False


def _last_json(text: str) -> dict[str, Any]:
    for line in reversed(text.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return cast(dict[str, Any], json.loads(line))
            except json.JSONDecodeError:
                continue
    return {}


def _tail(text: str, n: int = 10) -> str:
    lines = [ln for ln in text.strip().splitlines() if not ln.startswith("PROGRESS ")]
    return "\n".join(lines[-n:])


def targets_from(nodes: Sequence[str], argv: Argv) -> dict[str, Argv]:
    """The same receiving command on every node."""
    return dict.fromkeys(nodes, argv)
