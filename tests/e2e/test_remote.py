"""The remote layer's primitives against real sshd: a long-running process with a held stdin,
kill, timeouts, and an SFTP write to a node that stops answering midway."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator

import pytest

from dgxcluster.core.session import Session
from dgxcluster.errors import CommandTimeout, ConnectError
from dgxcluster.inventory import load_inventory
from dgxcluster.remote.process import KILLED
from tests.conftest import Testbed

pytestmark = pytest.mark.e2e


@pytest.fixture
def session(testbed3: Testbed) -> Iterator[Session]:
    with Session.open(load_inventory(testbed3.inventory), command="test") as s:
        yield s


def _gone(tb: Testbed, node: str, marker: str, within_s: float = 15.0) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if marker not in tb.tb("ps", node).stdout:
            return True
        time.sleep(0.2)
    return False


def test_a_held_stdin_keeps_the_command_until_released(session: Session) -> None:
    conn = session.cluster.conn("node1")
    proc = conn.start(["sh", "-c", 'read -r first; echo "READY $first"; cat >/dev/null; echo bye'],
                      stdin=b"hello\n", hold_stdin=True, timeout=60)
    assert proc.wait_line(lambda ln: ln.startswith("READY"), 30) == "READY hello"
    assert not proc.done  # waiting on its stdin, which we hold
    proc.release()
    res = proc.result()
    assert res.exit_code == 0 and res.stdout == "READY hello\nbye\n"


def test_kill_closes_the_channel_and_the_remote_side_ends(session: Session,
                                                          testbed3: Testbed) -> None:
    marker = f"marker-{uuid.uuid4().hex[:8]}"
    proc = session.cluster.conn("node2").start(
        ["sh", "-c", "echo READY; cat >/dev/null", marker], hold_stdin=True, timeout=60)
    assert proc.wait_line(lambda ln: ln == "READY", 30) == "READY"
    assert marker in testbed3.tb("ps", "node2").stdout
    proc.kill()
    assert proc.wait(30) and proc.result().exit_code == KILLED
    assert _gone(testbed3, "node2", marker), testbed3.tb("ps", "node2").stdout
    assert session.cluster.conn("node2").run(["true"]).ok  # the connection itself is fine


def test_a_command_past_its_timeout_names_the_node(session: Session) -> None:
    with pytest.raises(CommandTimeout, match="node3: `sleep 30` gave no result within 1s"):
        session.cluster.conn("node3").run(["sleep", "30"], timeout=1)


def test_a_node_that_stops_answering_mid_write_ends_the_put_naming_node_and_path(
        healthy3: Testbed) -> None:
    name = f"frozen-{uuid.uuid4().hex[:8]}"
    healthy3.tb("hang", "node2", "--during-sftp-write", f"{name}*")
    outcome: list[BaseException | None] = []
    with Session.open(load_inventory(healthy3.inventory), command="test") as s:
        s.cluster.conn("node2").run(["true"]).check()  # connected before the node hangs

        def put() -> None:
            try:
                s.cluster.conn("node2").put(b"x" * 200_000, f"/tmp/{name}", timeout=3)
                outcome.append(None)
            except BaseException as exc:  # handed to the test below
                outcome.append(exc)

        writer = threading.Thread(target=put, daemon=True)
        writer.start()
        writer.join(60)
        assert not writer.is_alive(), "the put hung"
        err = outcome[0]
        assert isinstance(err, ConnectError), err
        assert err.node == "node2"
        assert err.reason == f"no answer within 3s while writing /tmp/{name} (SFTP)"
        assert s.cluster.conn("node1").put(b"ok", f"/tmp/{name}") is None  # others unaffected
        with pytest.raises(ConnectError, match="node2"):  # hung: no banner for a new connection
            s.cluster.conn("node2").run(["true"], timeout=5)
    healthy3.tb("unhang", "node2")
    leftovers = healthy3.node_exec("node2", "sh", "-c", f"ls /tmp/{name}* 2>/dev/null",
                                   check=False).stdout.split()
    assert all(".tmp-" in p for p in leftovers) and leftovers  # never the final name
    healthy3.node_exec("node2", "sh", "-c", f"rm -f /tmp/{name}*")
    with Session.open(load_inventory(healthy3.inventory), command="test") as s:
        s.cluster.conn("node2").put(b"again", f"/tmp/{name}")
        assert s.cluster.conn("node2").get(f"/tmp/{name}") == b"again"
    healthy3.node_exec("node2", "rm", "-f", f"/tmp/{name}")
