"""Orchestrate a node-to-node stream: one source command's stdout into commands on many peers.

The operator only starts the agents (over the SSH connections it already holds) and hands
them one-time tokens on stdin; the bytes flow source -> peers directly over the fabric, to
all peers at once. Every peer's outcome is reported separately.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from dgxcluster.core import ship
from dgxcluster.core.nodepaths import NodePaths
from dgxcluster.core.progress import NullProgress, Progress
from dgxcluster.core.session import Session
from dgxcluster.core.steps import Outcome, Status, failed
from dgxcluster.core.units import human_bytes
from dgxcluster.errors import ConnectError, DgxClusterError, StepError
from dgxcluster.remote.command import Argv
from dgxcluster.remote.connection import Connection, RemoteProcess
from dgxcluster.remote.result import GroupResult


@dataclass
class RelayResult:
    source: str
    bytes: int = 0
    sha256: str = ""
    seconds: float = 0.0
    targets: dict[str, Outcome] = field(default_factory=dict)  # data: {"bytes": n}

    @property
    def ok(self) -> bool:
        return all(t.ok for t in self.targets.values())


@dataclass
class _Receiver:
    node: str
    token: str = field(default_factory=lambda: secrets.token_hex(32))
    proc: RemoteProcess | None = None
    port: int | None = None
    error: BaseException | None = None


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
    knobs, recv_knobs = _knobs(idle_timeout, finish_timeout)
    inv = session.inventory
    cluster = session.cluster
    agents = _prepare(session, [source, *targets], paths or {})
    result = RelayResult(source=source)
    if source in agents.errors:
        raise StepError(step, f"cannot prepare the source: {agents.errors[source]}", node=source)
    for node, err in agents.errors.items():
        result.targets[node] = Outcome(node, step, Status.UNREACHABLE if isinstance(
            err, ConnectError) else Status.FAILED, f"cannot prepare: {err}")
    receivers: dict[str, _Receiver] = {}
    try:
        for node, argv in targets.items():
            if node not in result.targets:
                receivers[node] = _start_receiver(
                    cluster.conn(node), agents.values[node], str(inv.node(node).fabric_ip),
                    argv, timeout, prog, recv_knobs)
        listen_by = time.monotonic() + inv.ssh.connect_timeout + 30
        for r in receivers.values():
            _await_listen(r, listen_by - time.monotonic())
        plan = [
            {"name": node, "addr": str(inv.node(node).fabric_ip), "port": r.port, "token": r.token}
            for node, r in receivers.items()
            if r.port is not None
        ]
        prog.status(source, f"sending to {len(plan)} peer(s)")
        summary = _send(cluster.conn(source), ship.argv(agents.values[source], "relay", "send",
                                                         *knobs, "--", *source_argv),
                        plan, timeout, prog, step)
        result.bytes = int(summary.get("bytes", 0))
        result.sha256 = str(summary.get("sha256", ""))
        result.seconds = float(summary.get("seconds", 0.0))
        dropped_wait = min(timeout, 2 * (idle_timeout or 300.0) + inv.ssh.connect_timeout)
        for r in receivers.values():
            result.targets[r.node] = _receiver_outcome(r, summary, step, timeout, dropped_wait)
    finally:
        for r in receivers.values():
            if r.proc is not None:
                r.proc.release()
    return result


def _knobs(idle_timeout: float | None, finish_timeout: float | None) -> tuple[list[str], list[str]]:
    """The sender's and the receivers' options: receivers wait twice the sender's idle time."""
    send: list[str] = []
    recv: list[str] = []
    if idle_timeout is not None:
        send += ["--idle-timeout", f"{idle_timeout:g}"]
        recv += ["--idle-timeout", f"{2 * idle_timeout:g}"]
    if finish_timeout is not None:
        send += ["--finish-timeout", f"{finish_timeout:g}"]
    return send, recv


def _prepare(session: Session, nodes: list[str],
             known: Mapping[str, NodePaths]) -> GroupResult[str]:
    """The node-side bundle (which holds the agent) on every node: its path per node."""
    inv = session.inventory

    def prepare(c: Connection) -> str:
        return ship.ensure(c, known.get(c.node) or NodePaths.resolve(c, inv.state_dir, inv.cluster))

    return session.cluster.map(prepare, nodes)


def _send(conn: Connection, argv: Argv, plan: list[dict[str, Any]], timeout: float,
          prog: Progress, step: str) -> dict[str, Any]:
    """The sending agent, the plan on its stdin (held open: if the operator goes away, the
    agent kills its command); its summary once it is done. Raises if the source failed."""

    def on_line(stream: str, line: str) -> None:
        if stream == "stderr" and line.startswith("PROGRESS "):
            prog.status(conn.node, f"sent {human_bytes(int(line.split()[1]))}")

    sender = conn.start(argv, stdin=json.dumps({"targets": plan}).encode() + b"\n",
                        hold_stdin=True, timeout=timeout, on_line=on_line)
    try:
        res = sender.result()
    finally:
        sender.release()
    summary = _last_json(res.stdout)
    if summary.get("exit", res.exit_code) not in (0, None) or (res.exit_code != 0 and not summary):
        raise StepError(step, f"source command failed ({res.exit_code}): {_tail(res.stderr)}",
                        node=conn.node)
    return summary


def _start_receiver(conn: Connection, pyz: str, bind: str, argv: Argv, timeout: float,
                    prog: Progress, knobs: Sequence[str] = ()) -> _Receiver:
    """The receiving agent, holding its stdin (the token first) until the relay is over:
    if the operator goes away, the agent sees EOF and kills its command."""
    r = _Receiver(node=conn.node)

    def on_line(stream: str, line: str) -> None:
        if stream == "stdout" and line.startswith("LISTEN "):
            prog.status(conn.node, "receiving")

    try:
        r.proc = conn.start(ship.argv(pyz, "relay", "recv", "--bind", bind, *knobs, "--", *argv),
                            stdin=r.token.encode() + b"\n", hold_stdin=True, timeout=timeout,
                            on_line=on_line)
    except DgxClusterError as exc:
        r.error = exc
    return r


def _await_listen(r: _Receiver, within_s: float) -> None:
    """The port the agent listens on, once it says so (None if it ended or stayed silent)."""
    if r.proc is None:
        return
    try:
        line = r.proc.wait_line(lambda ln: ln.startswith("LISTEN "), max(0.0, within_s))
    except TimeoutError:
        return
    if line is not None:
        r.port = int(line.split()[1])


def _receiver_outcome(r: _Receiver, summary: Mapping[str, Any], step: str, timeout: float,
                      dropped_wait: float) -> Outcome:
    """Once the sender is done: a peer it dropped gets `dropped_wait` to end, others `timeout`."""
    sender_view = cast(Mapping[str, str], summary.get("targets", {})).get(r.node, "")
    if r.proc is not None:
        r.proc.wait(dropped_wait if str(sender_view).startswith("error") else timeout)
    if r.error is not None:
        return failed(r.node, step, r.error)
    if r.proc is None or not r.proc.done:
        return Outcome(r.node, step, Status.FAILED, "receiver did not finish")
    try:
        res = r.proc.result()
    except (DgxClusterError, OSError) as exc:
        return failed(r.node, step, exc)
    info = _last_json(res.stdout)
    got = {"bytes": int(info.get("bytes", 0))}
    if res.exit_code == 0 and info.get("complete"):
        return Outcome(r.node, step, Status.CHANGED, "received",
                       float(info.get("seconds", 0.0)), data=got)
    why = _tail(res.stderr) or sender_view or f"exit {res.exit_code}"
    return Outcome(r.node, step, Status.FAILED,
                   f"receive failed (exit {res.exit_code}): {why}", data=got)


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
