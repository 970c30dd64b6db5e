"""`logs --follow` with fake connections: prefixes, redaction, unreachable nodes, release."""

from __future__ import annotations

import threading

from dgxcluster.core.session import Session
from dgxcluster.inventory import parse_inventory
from dgxcluster.logs.follow import FOLLOW, follow, follow_argv, list_argv
from dgxcluster.secrets import Redactor
from tests.fakes import FakeConnection, Reply

TOKEN = "hf_" + "Fo11ow" * 5
INV = """
cluster: demo
nodes:
  - {name: n1, host: 10.0.0.1, fabric_ip: 192.0.2.1}
  - {name: n2, host: 10.0.0.2, fabric_ip: 192.0.2.2}
  - {name: n3, host: 10.0.0.3, fabric_ip: 192.0.2.3}
"""


def test_lines_prefixed_redacted_and_followers_released() -> None:
    def follower(argv: list[str], stdin: bytes | None) -> Reply:
        # `docker logs -f` behind a script that reads its stdin to EOF: runs until released
        return Reply(stdout=f"line from {argv[4]}\nleaking {TOKEN}\n", until_eof=True)

    fakes = {
        "n1": FakeConnection("n1").on("docker ps", Reply(stdout="dgxc-demo-head\thead\n"))
                                  .on("^sh -c", follower),
        "n2": FakeConnection("n2", unreachable="connection refused"),
        "n3": FakeConnection("n3").on("docker ps", Reply(stdout="")),
    }
    inv = parse_inventory(INV, environ={})
    lines: list[tuple[str, str, str]] = []
    notes: list[str] = []
    stop = threading.Event()
    stop.set()  # stop at once: the followers are released
    with Session.open(inv, factory=lambda spec: fakes[spec.name], environ={},  # type: ignore[arg-type]
                      redactor=Redactor()) as s:
        result = follow(s, since_s=0, on_line=lambda *a: lines.append(a),
                        on_note=notes.append, stop=stop)
    assert result.unreachable == {"n2": "connection refused"}
    assert result.followed == [("n1", "dgxc-demo-head")]
    assert ("n1", "head", "line from dgxc-demo-head") in lines
    assert ("n1", "head", "leaking ******") in lines
    proc = fakes["n1"].processes[-1]
    assert proc.done and proc.result().exit_code == 0  # ended by its released stdin, not killed
    assert fakes["n1"].stdins[-1] == b""
    assert "n2: unreachable: connection refused" in notes
    assert "n3: no dgxcluster containers" in notes
    assert not any("log ended" in n for n in notes)  # released by us: nothing to report
    assert fakes["n1"].calls[0] == list_argv("demo")


def test_a_log_that_ends_by_itself_is_reported_once() -> None:
    fakes = {"n1": FakeConnection("n1").on("docker ps", Reply(stdout="dgxc-demo-head\thead\n"))
                                       .on("^sh -c", Reply(stdout="bye\n", exit_code=1)),
             "n2": FakeConnection("n2").on("docker ps", Reply(stdout="")),
             "n3": FakeConnection("n3").on("docker ps", Reply(stdout=""))}
    inv = parse_inventory(INV, environ={})
    notes: list[str] = []
    with Session.open(inv, factory=lambda spec: fakes[spec.name], environ={},  # type: ignore[arg-type]
                      redactor=Redactor()) as s:
        follow(s, on_line=lambda *a: None, on_note=notes.append)  # returns: nothing left to follow
    assert [n for n in notes if "log ended" in n] == ["n1[head]: log ended (exit 1)"]


def test_follow_script_takes_values_as_parameters() -> None:
    argv = follow_argv("dgxc-x-head", 600, 50)
    assert argv == ["sh", "-c", FOLLOW, "sh", "dgxc-x-head", "600", "50"]
    assert "cat <&4" in FOLLOW and 'kill "$p"' in FOLLOW
