"""Fan-out semantics with fake connections: every node's outcome is kept, none hidden."""

from __future__ import annotations

import threading

import pytest

from dgxcluster.errors import CommandError, ConnectError, NodesFailed
from dgxcluster.inventory import parse_inventory
from dgxcluster.remote.connection import Connection
from dgxcluster.remote.group import Cluster
from tests.fakes import FakeConnection, Reply

INV = "nodes:\n" + "".join(
    f"  - name: n{i}\n    host: 10.0.0.{i}\n    fabric_ip: 192.0.2.{i}\n" for i in range(1, 5)
)


def cluster(fakes: dict[str, FakeConnection], **kw: int) -> Cluster:
    inv = parse_inventory(INV, environ={})
    return Cluster(inv, factory=lambda spec: fakes[spec.name], **kw)  # type: ignore[arg-type]


def test_every_node_outcome_is_kept() -> None:
    fakes = {f"n{i}": FakeConnection(f"n{i}").on("hostname", Reply(stdout=f"n{i}\n")) for i in
             range(1, 5)}
    fakes["n2"].on("", Reply())  # irrelevant
    fakes["n3"].unreachable = "connection refused"
    fakes["n4"].rules.insert(0, ("hostname", Reply(exit_code=7, stderr="boom")))
    res = cluster(fakes).run(["hostname"])
    assert list(res) == ["n1", "n2", "n3", "n4"]
    assert res.values["n1"].stdout == "n1\n"
    assert isinstance(res.errors["n3"], ConnectError)
    assert res.values["n4"].exit_code == 7
    assert set(res.unreachable) == {"n3"}
    with pytest.raises(ConnectError):
        res.raise_for_failures("hostname")


def test_combined_error_names_each_node() -> None:
    fakes = {f"n{i}": FakeConnection(f"n{i}").on("false", Reply(exit_code=1, stderr=f"bad{i}"))
             for i in range(1, 5)}

    def fn(c: Connection) -> str:
        c.run(["false"]).check()
        return "never"

    res = cluster(fakes).map(fn)
    with pytest.raises(NodesFailed) as info:
        res.raise_for_failures("check")
    text = str(info.value)
    assert all(f"bad{i}" in text for i in range(1, 5))
    assert all(isinstance(e, CommandError) for e in res.errors.values())


def test_runs_in_parallel_and_bounded() -> None:
    """All four nodes at once (a barrier of four only opens if they are); with
    max_parallel=2, never more than two worker threads."""
    barrier = threading.Barrier(4, timeout=30)
    threads: set[int] = set()

    def meet(argv: list[str], stdin: bytes | None) -> Reply:
        threads.add(threading.get_ident())
        barrier.wait()  # BrokenBarrierError (a failed node) unless all four run together
        return Reply(stdout="met")

    fakes = {f"n{i}": FakeConnection(f"n{i}").on("meet", meet) for i in range(1, 5)}
    res = cluster(fakes).run(["meet"])
    assert res.errors == {}
    assert [r.stdout for r in res.values.values()] == ["met"] * 4
    assert len(threads) == 4

    barrier = threading.Barrier(2, timeout=30)
    threads.clear()
    res = cluster(fakes, max_parallel=2).run(["meet"])
    assert res.errors == {}  # pairs met: two at a time
    assert len(threads) == 2  # and only two threads ever ran them


def test_connections_are_reused_within_a_cluster() -> None:
    made: list[str] = []
    fakes = {f"n{i}": FakeConnection(f"n{i}") for i in range(1, 5)}
    inv = parse_inventory(INV, environ={})

    def factory(spec):  # type: ignore[no-untyped-def]
        made.append(spec.name)
        return fakes[spec.name]

    c = Cluster(inv, factory=factory)
    for _ in range(5):
        c.run(["true"])
    assert sorted(made) == ["n1", "n2", "n3", "n4"]
    c.close()
    assert all(f.closed for f in fakes.values())


def test_select_rejects_unknown_node() -> None:
    from dgxcluster.errors import UsageError

    with pytest.raises(UsageError, match="--node"):
        cluster({}).select(["n9"])


def test_interrupted_fanout_kills_its_channels_but_keeps_connections_and_the_lock(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C in a fan-out kills the commands its calls started (unblocking its threads) and
    refuses anything they start next, but keeps the connections: the rollback after it runs
    on the same ones (one connection per node per invocation), and the cluster lock, started
    outside any fan-out on the pooled connection, stays held."""
    import threading

    from dgxcluster.errors import Cancelled
    from dgxcluster.remote import group, scope

    inv = parse_inventory(INV, environ={})
    made: list[FakeConnection] = []

    def factory(spec: object) -> FakeConnection:
        made.append(FakeConnection(spec.name).on("lock", Reply(stdout="LOCKED\n", until_eof=True))  # type: ignore[attr-defined]
                    .on("sleep", Reply(delay_s=30)).on("", Reply(stdout="ok\n")))
        return made[-1]

    c = Cluster(inv, factory=factory)  # type: ignore[arg-type]
    with scope.detached():
        lock = c.conn("n1").start(["lock"], hold_stdin=True)
    assert lock.wait_line(lambda ln: ln == "LOCKED", 5) == "LOCKED"
    running = threading.Barrier(5)  # four nodes' calls and the interrupt
    after: dict[str, BaseException] = {}
    ended = threading.Semaphore(0)

    def call(conn: FakeConnection) -> None:  # type: ignore[misc]
        proc = conn.start(["sleep", "30"])
        running.wait(5)
        proc.result()
        try:
            conn.run(["next", "step"])
        except Cancelled as exc:
            after[conn.node] = exc
        finally:
            ended.release()

    real_wait = group.wait

    def interrupted(*a: object, **k: object) -> object:
        running.wait(5)
        raise KeyboardInterrupt

    monkeypatch.setattr(group, "wait", interrupted)
    with pytest.raises(KeyboardInterrupt):
        c.map(call)  # type: ignore[arg-type]
    monkeypatch.setattr(group, "wait", real_wait)
    sleeps = [p for f in made for p in f.processes if p.argv == "sleep 30"]
    assert len(sleeps) == 4 and all(p.wait(5) and p.result().exit_code == -9 for p in sleeps)
    assert all(ended.acquire(timeout=5) for _ in made)  # the abandoned calls start nothing more
    assert sorted(after) == ["n1", "n2", "n3", "n4"]
    assert not lock.done and not any(f.closed for f in made)
    res = c.run(["rollback"])  # the rollback: the same four connections
    assert res.ok and len(made) == 4
    lock.release()
    assert lock.result().exit_code == 0
