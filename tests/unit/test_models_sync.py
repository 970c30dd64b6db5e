"""`model sync`'s stage list driven over nodes that are folders here (tests/localnode.py).

The node agent (nodeside/hfcache.py) really scans, hashes and receives files; only the
sockets between nodes are replaced by a local pipe (`LocalRelay`).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from dgxcluster.cli.exitcodes import exit_code_of
from dgxcluster.core.session import Session
from dgxcluster.core.steps import Status
from dgxcluster.errors import ConnectError, StepError
from dgxcluster.inventory import parse_inventory
from dgxcluster.models import copy as copy_mod
from dgxcluster.models import sync as sync_mod
from dgxcluster.models.repoid import RepoId
from dgxcluster.models.sync import STAGES, sync
from tests.hfcache import build_argv, spec
from tests.localnode import LocalConnection, LocalRelay, execute, local_nodes

NODES = ("n1", "n2", "n3")
INV = "cluster: c\nnodes:\n" + "".join(
    f"  - {{name: {n}, host: 10.0.0.{i}, fabric_ip: 192.0.2.{i}}}\n"
    for i, n in enumerate(NODES, 1))
REPO = RepoId.parse("org/tiny")
BIG = 1_500_000  # a blob named by its sha256 (as LFS files are)


def _hub(node: LocalConnection) -> Path:
    return node.home / ".cache" / "huggingface" / "hub"


def _entry(node: LocalConnection) -> Path:
    return _hub(node) / REPO.folder


@pytest.fixture
def nodes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, LocalConnection]:
    made = local_nodes(tmp_path, NODES)
    built = execute(made["n1"].home, build_argv(str(_hub(made["n1"])), spec(
        "org/tiny", {"model.safetensors": BIG, "config.json": '{"layers": 2}'})), None)
    assert built.returncode == 0, built.stderr
    return made


@pytest.fixture
def relay(nodes: dict[str, LocalConnection], monkeypatch: pytest.MonkeyPatch) -> LocalRelay:
    fake = LocalRelay(nodes)
    monkeypatch.setattr(copy_mod, "relay", fake)
    return fake


def _session(nodes: dict[str, LocalConnection], tmp_path: Path) -> Session:
    inv = parse_inventory(INV, environ={})
    return Session.open(inv, factory=lambda s: nodes[s.name], environ={},
                        log_dir=tmp_path / "logs")


def _files(entry: Path) -> dict[str, bytes]:
    return {str(p.relative_to(entry)): p.read_bytes() for p in sorted(entry.rglob("*"))
            if p.is_file() and ".dgxc" not in p.name}


def test_the_stages_are_declared_in_order() -> None:
    assert [s.name for s in STAGES] == ["open", "scan", "verify-peers", "copy", "verify-source"]


def test_copies_to_every_peer_then_a_second_sync_changes_nothing(
        nodes: dict[str, LocalConnection], relay: LocalRelay, tmp_path: Path) -> None:
    with _session(nodes, tmp_path) as s:
        report = sync(s, REPO)
    by = {o.node: o for o in report.outcomes}
    assert [o.node for o in report.outcomes] == ["n1", "n2", "n3"]
    assert by["n2"].status is by["n3"].status is Status.CHANGED
    assert "received" in by["n2"].detail
    assert relay.calls == [("n1", ["n2", "n3"])]  # one stream for both: they lacked the same
    want = _files(_entry(nodes["n1"]))
    assert any(len(b) == BIG for b in want.values())
    assert _files(_entry(nodes["n2"])) == want == _files(_entry(nodes["n3"]))
    assert report.bytes_received > 2 * BIG and report.ok and exit_code_of(report.outcomes) == 0

    with _session(nodes, tmp_path) as s:
        again = sync(s, REPO)
    assert [o.status for o in again.outcomes] == [Status.UNCHANGED] * 3
    assert relay.calls == [("n1", ["n2", "n3"])]  # nothing sent the second time
    assert again.bytes_received == 0


def test_a_copy_damaged_in_transit_is_caught_by_the_hash_and_sent_again(
        nodes: dict[str, LocalConnection], relay: LocalRelay, tmp_path: Path) -> None:
    blob = max((_entry(nodes["n1"]) / "blobs").iterdir(), key=lambda p: p.stat().st_size)
    relay.spoil["n3"] = blob.read_bytes()[:4096]
    with _session(nodes, tmp_path) as s:
        report = sync(s, REPO)
    by = {o.node: o for o in report.outcomes}
    assert by["n3"].status is Status.CHANGED and "over 2 copies" in by["n3"].detail
    assert relay.calls == [("n1", ["n2", "n3"]), ("n1", ["n3"])]  # only n3 the second time
    assert (_entry(nodes["n3"]) / "blobs" / blob.name).read_bytes() == blob.read_bytes()


def test_an_unreachable_peer_is_named_and_the_others_are_served(
        nodes: dict[str, LocalConnection], relay: LocalRelay, tmp_path: Path) -> None:
    nodes["n3"].unreachable = "connection refused"
    with _session(nodes, tmp_path) as s:
        report = sync(s, REPO)
    by = {o.node: o for o in report.outcomes}
    assert by["n3"].status is Status.UNREACHABLE and "connection refused" in by["n3"].detail
    assert by["n2"].status is Status.CHANGED
    assert relay.calls == [("n1", ["n2"])]
    assert exit_code_of(report.outcomes) == 3


def test_an_unreachable_source_stops_before_anything_moves(
        nodes: dict[str, LocalConnection], relay: LocalRelay, tmp_path: Path) -> None:
    nodes["n1"].unreachable = "no route to host"
    with _session(nodes, tmp_path) as s, pytest.raises(ConnectError, match="no route"):
        sync(s, REPO)
    assert relay.calls == []


def test_a_source_without_the_model_names_the_node_that_has_it(
        nodes: dict[str, LocalConnection], relay: LocalRelay, tmp_path: Path) -> None:
    with _session(nodes, tmp_path) as s, pytest.raises(StepError) as info:
        sync(s, REPO, "n2")
    text = str(info.value)
    assert text.startswith("n2: ") and "not in this node's HF cache" in text
    assert "n1 has it: dgxcluster model sync org/tiny --from n1" in text
    assert relay.calls == []


def test_a_peer_short_of_space_fails_alone(nodes: dict[str, LocalConnection], relay: LocalRelay,
                                          tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_scan = sync_mod._Run.scan

    def scan(self: sync_mod._Run, names: list[str]) -> object:
        res = real_scan(self, names)
        if "n2" in self.free:
            self.free["n2"] = 1000  # what the node's `df` would say
        return res

    monkeypatch.setattr(sync_mod._Run, "scan", scan)
    with _session(nodes, tmp_path) as s:
        report = sync(s, REPO)
    by = {o.node: o for o in report.outcomes}
    assert by["n2"].status is Status.FAILED and "HF cache has 1.0 kB free" in by["n2"].detail
    assert by["n3"].status is Status.CHANGED
    assert relay.calls == [("n1", ["n3"])]


def test_a_partial_blob_left_by_a_full_disk_counts_as_free_and_is_removed(
        nodes: dict[str, LocalConnection], relay: LocalRelay, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 12: ENOSPC mid-copy left `<blob>.dgxc-incoming` on n2, and the free-space check
    counted it against the copy, so every re-run was refused. Now it counts as free (the
    receiver removes it first), the report says what was found, and the copy lands."""
    blob = max((_entry(nodes["n1"]) / "blobs").iterdir(), key=lambda p: p.stat().st_size)
    left = _entry(nodes["n2"]) / "blobs" / f"{blob.name}.dgxc-incoming"
    left.parent.mkdir(parents=True)
    left.write_bytes(blob.read_bytes()[: BIG - 300_000])  # what the full disk let through
    real_scan = sync_mod._Run.scan

    def scan(self: sync_mod._Run, names: list[str]) -> object:
        res = real_scan(self, names)
        if "n2" in self.free:  # the disk is full but for what the partial file holds
            self.free["n2"] = 400_000 if left.exists() else BIG
        return res

    monkeypatch.setattr(sync_mod._Run, "scan", scan)
    with _session(nodes, tmp_path) as s:
        report = sync(s, REPO)
    by = {o.node: o for o in report.outcomes}
    assert by["n2"].status is Status.CHANGED, by["n2"].detail
    assert "1 partial file(s) (1.2 MB) of an interrupted copy found, removed" in by["n2"].detail
    assert not left.exists()
    assert _files(_entry(nodes["n2"])) == _files(_entry(nodes["n1"]))
    assert "partial" not in by["n3"].detail


def test_only_syncs_own_partial_files_count_as_free() -> None:
    from dgxcluster.models.layout import INCOMING_SUFFIX, CacheEntry
    from dgxcluster.nodeside import hfcache

    assert INCOMING_SUFFIX == hfcache.TMP_SUFFIX
    e = CacheEntry("models--org--tiny", partial={"ab.dgxc-incoming": 5, "cd.incomplete": 7})
    assert e.leftovers == {"ab.dgxc-incoming": 5}  # a downloader's .incomplete is not ours
