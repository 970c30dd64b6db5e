"""Relay orchestration with fake connections: who gets which token, what the sender's plan
holds, how each peer's outcome is told (the bytes themselves: tests/e2e/test_relay.py)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from dgxcluster.core import ship
from dgxcluster.core.nodepaths import NodePaths
from dgxcluster.core.relay import relay
from dgxcluster.core.session import Session
from dgxcluster.errors import StepError
from dgxcluster.inventory import parse_inventory
from tests.fakes import FakeConnection, Reply

INV = """
cluster: c
nodes:
  - {name: n1, host: 10.0.0.1, fabric_ip: 192.0.2.1}
  - {name: n2, host: 10.0.0.2, fabric_ip: 192.0.2.2}
  - {name: n3, host: 10.0.0.3, fabric_ip: 192.0.2.3}
"""
PATHS = {n: NodePaths("/root", "~/.local/state/dgxcluster", "c") for n in ("n1", "n2", "n3")}
DONE = {"bytes": 42, "sha256": "ab" * 32, "complete": True, "exit": 0, "seconds": 0.5}


def receiver(port: int) -> Reply:
    return Reply(stdout=f"LISTEN {port}\n{json.dumps(DONE)}\n")


def sender(plans: list[dict[str, object]]) -> object:
    def answer(argv: list[str], stdin: bytes | None) -> Reply:
        assert stdin is not None
        plan = json.loads(stdin)
        plans.append(plan)
        targets = {t["name"]: "ok" for t in plan["targets"]}
        return Reply(stdout=json.dumps({"bytes": 42, "sha256": "ab" * 32, "exit": 0,
                                        "seconds": 0.5, "targets": targets}) + "\n")
    return answer


@pytest.fixture
def fakes() -> dict[str, FakeConnection]:
    return {n: FakeConnection(n) for n in ("n1", "n2", "n3")}


@pytest.fixture
def session(fakes: dict[str, FakeConnection], tmp_path: Path) -> Iterator[Session]:
    inv = parse_inventory(INV, environ={})
    with Session.open(inv, factory=lambda spec: fakes[spec.name], environ={},  # type: ignore[arg-type]
                      log_dir=tmp_path) as s:
        yield s


def test_each_receiver_gets_its_own_token_on_stdin_and_the_sender_the_plan(
        session: Session, fakes: dict[str, FakeConnection]) -> None:
    plans: list[dict[str, object]] = []
    fakes["n1"].on("relay send", sender(plans))  # type: ignore[arg-type]
    fakes["n2"].on("relay recv", receiver(4102))
    fakes["n3"].on("relay recv", receiver(4103))
    res = relay(session, "n1", ["cat", "/x"], {"n2": ["sh", "-c", "cat >/y"],
                                               "n3": ["sh", "-c", "cat >/y"]}, paths=PATHS)
    assert res.ok and res.bytes == 42
    (plan,) = plans
    targets = {t["name"]: t for t in plan["targets"]}  # type: ignore[attr-defined]
    assert {n: (t["addr"], t["port"]) for n, t in targets.items()} == {
        "n2": ("192.0.2.2", 4102), "n3": ("192.0.2.3", 4103)}
    for n in ("n2", "n3"):
        recv_stdin = fakes[n].stdins[-1]
        assert recv_stdin == targets[n]["token"].encode() + b"\n"
        assert all(targets[n]["token"] not in a for c in fakes[n].calls for a in c)
        recv_call = fakes[n].calls[-1]
        assert recv_call[:4] == ["python3", ship.path(PATHS[n]), "relay", "recv"]
        assert recv_call[-4:] == ["--", "sh", "-c", "cat >/y"]
    assert targets["n2"]["token"] != targets["n3"]["token"]
    assert fakes["n1"].calls[-1][-3:] == ["--", "cat", "/x"]


def test_a_receiver_that_never_listens_is_left_out_and_reported(
        session: Session, fakes: dict[str, FakeConnection]) -> None:
    plans: list[dict[str, object]] = []
    fakes["n1"].on("relay send", sender(plans))  # type: ignore[arg-type]
    fakes["n2"].on("relay recv", receiver(4102))
    fakes["n3"].on("relay recv", Reply(exit_code=1, stderr="OSError: Address already in use\n"))
    res = relay(session, "n1", ["cat", "/x"], {"n2": ["true"], "n3": ["true"]}, paths=PATHS)
    assert [t["name"] for t in plans[0]["targets"]] == ["n2"]  # type: ignore[index]
    assert res.targets["n2"].ok
    assert not res.targets["n3"].ok
    assert res.targets["n3"].detail == "receive failed (exit 1): OSError: Address already in use"


def test_an_unreachable_peer_is_reported_not_raised(
        session: Session, fakes: dict[str, FakeConnection]) -> None:
    plans: list[dict[str, object]] = []
    fakes["n3"].unreachable = "connection refused"
    fakes["n1"].on("relay send", sender(plans))  # type: ignore[arg-type]
    fakes["n2"].on("relay recv", receiver(4102))
    res = relay(session, "n1", ["cat", "/x"], {"n2": ["true"], "n3": ["true"]}, paths=PATHS)
    assert res.targets["n2"].ok
    assert res.targets["n3"].detail == "cannot prepare: n3: unreachable: connection refused"


def test_a_failing_source_raises_and_releases_the_waiting_receivers(
        session: Session, fakes: dict[str, FakeConnection]) -> None:
    fakes["n1"].on("relay send", Reply(exit_code=1, stdout=json.dumps(
        {"bytes": 0, "exit": 1, "targets": {}}) + "\n", stderr="cat: /x: No such file\n"))
    fakes["n2"].on("relay recv", Reply(stdout="LISTEN 4102\n", until_eof=True))
    with pytest.raises(StepError, match=r"source command failed .*No such file"):
        relay(session, "n1", ["cat", "/x"], {"n2": ["true"]}, paths=PATHS)
    recv_proc = fakes["n2"].processes[-1]
    assert recv_proc.wait(5) and recv_proc.result().exit_code == 0  # released, not killed
