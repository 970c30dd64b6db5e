"""`distribute`: the source's image streamed to every receiver; layers they all hold are left out,
and a receiver whose docker refuses the trimmed stream gets the whole image once more."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from dgxcluster.core import ship
from dgxcluster.core.nodepaths import NodePaths
from dgxcluster.core.relay import RelayResult
from dgxcluster.core.session import Session
from dgxcluster.core.steps import Outcome, Status
from dgxcluster.errors import ConnectError
from dgxcluster.image import dockercmd
from dgxcluster.image.distribute import send_image
from dgxcluster.image.records import ImageRecord
from dgxcluster.inventory import parse_inventory
from tests.fakes import FakeConnection, Reply

INV = "cluster: c\nnodes:\n" + "".join(
    f"  - {{name: n{i}, host: 10.0.0.{i}, fabric_ip: 192.0.2.{i}}}\n" for i in (1, 2, 3))
BASE = ["sha256:" + "1" * 64, "sha256:" + "2" * 64]
TOP = "sha256:" + "3" * 64
REF = "t/img:ctx-abc"
PATHS = {n: NodePaths("/root", "~/.local/state/dgxcluster", "c") for n in ("n1", "n2", "n3")}


class Relay:
    """Stands for core.relay.relay (sockets between nodes): records, answers per target."""

    def __init__(self, answers: list[Mapping[str, Outcome]] | None = None,
                 raises: BaseException | None = None) -> None:
        self.calls: list[tuple[list[str], list[str]]] = []
        self.answers = answers or []
        self.raises = raises

    def __call__(self, session: object, source: str, source_argv: Sequence[str],
                 targets: Mapping[str, Sequence[str]], **_kw: object) -> RelayResult:
        self.calls.append((list(source_argv), sorted(targets)))
        if self.raises is not None:
            raise self.raises
        res = RelayResult(source)
        got = self.answers.pop(0) if self.answers else {}
        for n, argv in targets.items():
            assert list(argv) == dockercmd.load_argv()
            res.targets[n] = got.get(n) or Outcome(n, "distribute", Status.CHANGED, "received",
                                                   2.0, data={"bytes": 40_000_000})
        return res


def _layers_reply(want: list[str] | None, have: list[list[str]], has_filter: bool) -> Reply:
    lines = [f"want\t{json.dumps(want)}"] if want else []
    lines += ["have-filter"] if has_filter else []
    lines += [f"have\t{json.dumps(h)}" for h in have]
    return Reply(stdout="\n".join(lines) + "\n")


def _session(fakes: dict[str, FakeConnection], tmp: Path) -> Session:
    return Session.open(parse_inventory(INV, environ={}), factory=lambda s: fakes[s.name],
                        environ={}, log_dir=tmp)


@pytest.fixture
def fakes() -> dict[str, FakeConnection]:
    return {"n1": FakeConnection("n1").on("want", _layers_reply([*BASE, TOP], [[*BASE, TOP]], False)),
            "n2": FakeConnection("n2").on("want", _layers_reply(None, [BASE], False)),
            "n3": FakeConnection("n3").on("want", _layers_reply(None, [BASE, ["sha256:" + "9" * 64]],
                                                               False))}


def test_layers_every_receiver_holds_are_left_out(fakes: dict[str, FakeConnection], tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    relay = Relay()
    monkeypatch.setattr("dgxcluster.core.relay.relay", relay)
    got = send_image(_session(fakes, tmp_path), "n1", REF, ["n2", "n3"], paths=PATHS, timeout=60)
    [(source_argv, targets)] = relay.calls
    assert targets == ["n2", "n3"]
    assert source_argv[:3] == ["python3", ship.path(PATHS["n1"]), "layerfilter"]
    assert [source_argv[i + 1] for i, a in enumerate(source_argv) if a == "--skip"] == BASE
    assert source_argv[source_argv.index("--") + 1:] == dockercmd.save_argv(REF)
    for n in ("n2", "n3"):
        assert got[n].status is Status.CHANGED and got[n].count("bytes") == 40_000_000
        assert got[n].detail == "received from n1 (40.0 MB in 2.0s, 20.0 MB/s, 2 layer(s) already there)"


def test_a_refused_trimmed_stream_is_sent_again_whole(fakes: dict[str, FakeConnection],
                                                      tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    refused = Outcome("n3", "distribute", Status.FAILED, "receive failed (exit 1): open "
                      "/var/lib/docker/tmp/x/blobs/sha256/11: no such file or directory")
    relay = Relay([{"n3": refused}])
    monkeypatch.setattr("dgxcluster.core.relay.relay", relay)
    got = send_image(_session(fakes, tmp_path), "n1", REF, ["n2", "n3"], paths=PATHS, timeout=60)
    assert len(relay.calls) == 2
    assert relay.calls[1] == (dockercmd.save_argv(REF), ["n3"])  # whole image, n3 only
    assert got["n3"].status is Status.CHANGED and "already there" not in got["n3"].detail


def test_receivers_that_fail_or_cannot_be_reached_say_so(fakes: dict[str, FakeConnection],
                                                         tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    relay = Relay([{"n2": Outcome("n2", "distribute", Status.UNREACHABLE, "timed out"),
                    "n3": Outcome("n3", "distribute", Status.FAILED, "receive failed (exit 1): "
                                  "disk full")}])
    monkeypatch.setattr("dgxcluster.core.relay.relay", relay)
    got = send_image(_session(fakes, tmp_path), "n1", REF, ["n2", "n3"], paths=PATHS, timeout=60,
                     trim=False)
    assert relay.calls[0][0] == dockercmd.save_argv(REF) and len(relay.calls) == 1
    assert (got["n2"].status, got["n2"].step) == (Status.UNREACHABLE, "receive")
    assert got["n3"].status is Status.FAILED and "disk full" in got["n3"].detail


def test_an_unreachable_source_fails_every_receiver_naming_it(fakes: dict[str, FakeConnection],
                                                              tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("dgxcluster.core.relay.relay",
                        Relay(raises=ConnectError("n1", "connection reset")))
    got = send_image(_session(fakes, tmp_path), "n1", REF, ["n2", "n3"], paths=PATHS, timeout=60,
                     trim=False)
    assert {n: o.detail for n, o in got.items()} == {
        n: "not received: n1 unreachable: connection reset" for n in ("n2", "n3")}


def test_image_record_round_trips_and_refuses_garbage() -> None:
    rec = ImageRecord("t/img", "ctx-abc", "sha256:" + "a" * 64, "distribute", "received", "n1",
                      "2026-12-01T00:00:00Z")
    assert ImageRecord.from_json(rec.to_json()) == rec
    assert json.loads(rec.to_json())["by"].startswith("dgxcluster ")
    assert ImageRecord.from_json(b"{not json") is None
    assert ImageRecord.from_json(b'{"image": "x"}') is None
