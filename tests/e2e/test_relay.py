"""Node-to-node streaming over the testbed fabric (real sshd, real TCP between namespaces)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from dgxcluster.core.relay import relay
from dgxcluster.core.session import Session
from dgxcluster.errors import StepError
from dgxcluster.inventory import load_inventory
from tests.conftest import Testbed

pytestmark = pytest.mark.e2e


@pytest.fixture
def session(testbed3: Testbed) -> Iterator[Session]:
    with Session.open(load_inventory(testbed3.inventory), command="test") as s:
        yield s


def test_stream_reaches_every_peer_intact(session: Session) -> None:
    session.cluster.run(["sh", "-c", "head -c 30000000 /dev/urandom > /tmp/relay-src"],
                        ["node1"]).raise_for_failures("make source")
    res = relay(session, "node1", ["cat", "/tmp/relay-src"],
                {n: ["sh", "-c", "cat > /tmp/relay-dst"] for n in ("node2", "node3")})
    assert res.ok, res.targets
    assert res.bytes == 30_000_000
    sums = session.cluster.run(["sh", "-c", "sha256sum /tmp/relay-src /tmp/relay-dst 2>/dev/null "
                                "| cut -d' ' -f1"]).values
    assert sums["node2"].stdout.strip() == res.sha256
    assert sums["node3"].stdout.strip() == res.sha256
    assert sums["node1"].stdout.strip() == res.sha256


def test_failing_receiver_is_reported_others_complete(session: Session) -> None:
    session.cluster.run(["sh", "-c", "head -c 5000000 /dev/urandom > /tmp/relay-src"],
                        ["node1"]).raise_for_failures("make source")
    res = relay(session, "node1", ["cat", "/tmp/relay-src"],
                {"node2": ["sh", "-c", "cat > /tmp/relay-ok"],
                 "node3": ["sh", "-c", "cat > /nonexistent-dir/x"]})
    assert res.targets["node2"].ok
    assert not res.targets["node3"].ok
    assert "node3" not in res.targets["node2"].detail
    assert "nonexistent-dir" in res.targets["node3"].detail


def test_failing_source_raises_and_leaves_no_agent_running(session: Session,
                                                           testbed3: Testbed) -> None:
    with pytest.raises(StepError, match="source command failed"):
        relay(session, "node1", ["cat", "/no/such/file"], {"node2": ["sh", "-c", "cat >/dev/null"]})
    for node in ("node1", "node2"):
        ps = testbed3.tb("ps", node).stdout
        assert " relay " not in ps and "nodeside-" not in ps, ps
