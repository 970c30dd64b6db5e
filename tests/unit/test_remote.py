"""The remote layer's contract: the interface, the SSH transport and the fake offer exactly
the same methods; the process handle behaves the same whoever feeds it; per-node timeouts."""

from __future__ import annotations

import inspect
import threading

import pytest

from dgxcluster.errors import CommandTimeout, ConnectError
from dgxcluster.inventory import parse_inventory
from dgxcluster.remote.connection import Connection
from dgxcluster.remote.group import Cluster
from dgxcluster.remote.process import KILLED, RemoteProcess
from dgxcluster.remote.ssh import SshConnection, _SshProcess
from tests.fakes import FakeConnection, FakeProcess, Reply

INV = "nodes:\n" + "".join(
    f"  - name: n{i}\n    host: 10.0.0.{i}\n    fabric_ip: 192.0.2.{i}\n" for i in range(1, 4)
)


def _methods(cls: type) -> set[str]:
    """Public methods and properties (data attributes such as a fake's recordings are not)."""
    return {n for n, v in inspect.getmembers(cls)
            if not n.startswith("_") and (callable(v) or isinstance(v, property))}


def test_connections_have_exactly_the_interface_methods_with_the_same_parameters() -> None:
    wanted = _methods(Connection)
    assert wanted == {"node", "connect", "start", "run", "put", "get", "tunnel", "close"}
    assert _methods(SshConnection) == wanted
    assert FakeConnection.SCRIPTING.isdisjoint(wanted)
    assert _methods(FakeConnection) - FakeConnection.SCRIPTING == wanted
    for name in wanted - {"node"}:
        want = inspect.signature(getattr(Connection, name)).parameters
        for impl in (SshConnection, FakeConnection):
            got = inspect.signature(getattr(impl, name)).parameters
            assert [(p.name, p.kind, p.default) for p in got.values()] == \
                   [(p.name, p.kind, p.default) for p in want.values()], (impl, name)


def test_process_handles_have_exactly_the_base_methods() -> None:
    wanted = _methods(RemoteProcess)
    assert wanted == {"done", "wait", "result", "wait_line", "release", "kill"}
    assert _methods(_SshProcess) == wanted
    assert _methods(FakeProcess) == wanted


# -- the handle, fed by the fake ------------------------------------------------------------

def test_held_stdin_keeps_the_command_running_until_released() -> None:
    conn = FakeConnection("n1").on("lock", Reply(stdout="LOCKED\n", until_eof=True))
    proc = conn.start(["lock"], stdin=b"first\n", hold_stdin=True)
    assert proc.wait_line(lambda ln: ln == "LOCKED", timeout=5) == "LOCKED"
    assert not proc.wait(0.05) and not proc.done
    proc.release()
    assert proc.wait(5)
    assert proc.result().exit_code == 0 and proc.result().stdout == "LOCKED\n"
    assert conn.stdins == [b"first\n"]


def test_wait_line_is_none_when_the_command_ends_without_the_marker() -> None:
    conn = FakeConnection("n1").on("", Reply(stdout="HELD by someone\n", exit_code=75))
    proc = conn.start(["lock"])
    assert proc.wait_line(lambda ln: ln == "LOCKED", timeout=5) is None
    assert proc.result().exit_code == 75


def test_wait_line_times_out_naming_the_node() -> None:
    proc = FakeConnection("n1").on("", Reply(until_eof=True)).start(["x"], hold_stdin=True)
    with pytest.raises(TimeoutError, match="n1"):
        proc.wait_line(lambda ln: True, timeout=0.05)
    proc.kill()


def test_kill_ends_a_running_command_with_the_killed_code() -> None:
    lines: list[tuple[str, str]] = []
    proc = FakeConnection("n1").on("", Reply(stdout="a\n", until_eof=True)).start(
        ["follow"], hold_stdin=True, on_line=lambda s, ln: lines.append((s, ln)))
    proc.kill()
    assert proc.wait(5)
    assert proc.result().exit_code == KILLED
    assert lines == [("stdout", "a")]
    proc.kill()  # idempotent once ended


def test_start_timeout_ends_a_held_command_in_command_timeout() -> None:
    proc = FakeConnection("n1").on("", Reply(until_eof=True)).start(["x"], hold_stdin=True,
                                                                    timeout=0.05)
    with pytest.raises(CommandTimeout, match="n1"):
        proc.result()


def test_unreachable_node_raises_at_start_and_connect() -> None:
    conn = FakeConnection("n1", unreachable="connection refused")
    with pytest.raises(ConnectError):
        conn.start(["true"])
    with pytest.raises(ConnectError):
        conn.connect()


def test_a_callback_that_raises_is_handed_to_result() -> None:
    def boom(_s: str, _l: str) -> None:
        raise ValueError("bad line")

    proc = FakeConnection("n1").on("", Reply(stdout="x\n")).start(["x"], on_line=boom)
    with pytest.raises(ValueError, match="bad line"):
        proc.result()


def test_run_is_start_then_result() -> None:
    conn = FakeConnection("n1").on("", Reply(stdout="out\n", stderr="err\n", exit_code=3))
    res = conn.run(["x"])
    assert (res.exit_code, res.stdout, res.stderr) == (3, "out\n", "err\n")
    assert len(conn.processes) == 1 and conn.processes[0].done


# -- per-node timeouts in the fan-out -------------------------------------------------------

def test_map_gives_up_on_a_node_past_its_timeout_without_waiting_for_it() -> None:
    fakes = {f"n{i}": FakeConnection(f"n{i}") for i in range(1, 4)}
    inv = parse_inventory(INV, environ={})
    cluster = Cluster(inv, factory=lambda spec: fakes[spec.name])  # type: ignore[arg-type]
    unblock = threading.Event()
    finished: list[str] = []

    def work(conn: Connection) -> str:
        if conn.node == "n2":
            unblock.wait(30)  # a node that never answers
        finished.append(conn.node)
        return conn.node

    res = cluster.map(work, timeout=0.2)
    assert not unblock.is_set() and "n2" not in finished  # map returned while n2 still ran
    unblock.set()
    assert res.values == {"n1": "n1", "n3": "n3"}
    err = res.errors["n2"]
    assert isinstance(err, CommandTimeout) and err.node == "n2" and "work" in str(err)
    assert fakes["n2"].closed and not fakes["n1"].closed
