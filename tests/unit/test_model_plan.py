"""What a peer lacks (plan) and whether a node can serve a revision (presence): pure, data in/out."""

from __future__ import annotations

from pathlib import Path

from dgxcluster.errors import ConnectError
from dgxcluster.inventory.schema import ContainerSettings
from dgxcluster.models.layout import CacheEntry, Check
from dgxcluster.models.plan import bytes_of, group_by_need, needs, source_problems, to_verify
from dgxcluster.models.presence import evaluate, revision_presence
from dgxcluster.models.pull import download_argv, explain, snapshot_commit
from dgxcluster.models.repoid import RepoId

C1, C2 = "1" * 40, "2" * 40
BIG, SMALL = "b" * 64, "5" * 40
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "hf"


def entry(blobs: dict[str, int], *, verified: bool = True, commit: str = C1,
          files: dict[str, str] | None = None, main: str | None = C1) -> CacheEntry:
    e = CacheEntry("models--org--m")
    for i, (name, size) in enumerate(blobs.items()):
        e.blobs[name] = (size, 1, 2, i)
        if verified:
            e.checks[name] = Check(True, e.blobs[name])
    for path, blob in (files or {"model.safetensors": BIG, "config.json": SMALL}).items():
        e.links[f"snapshots/{commit}/{path}"] = "../" * (path.count("/") + 2) + "blobs/" + blob
    if main:
        e.refs["main"] = main
        e.files["refs/main"] = (40, "h-" + main)
    return e


def test_a_fresh_peer_needs_everything_blobs_first_refs_last() -> None:
    src = entry({BIG: 100, SMALL: 5})
    plan = needs(src, None)
    assert plan[:2] == [f"blobs/{BIG}", f"blobs/{SMALL}"]
    assert plan[-1] == "refs/main"
    assert bytes_of(src, plan) == 145


def test_a_complete_verified_peer_needs_nothing() -> None:
    src = entry({BIG: 100, SMALL: 5})
    assert needs(src, entry({BIG: 100, SMALL: 5})) == []


def test_unverified_blobs_of_the_right_size_are_hashed_in_place_not_resent() -> None:
    src = entry({BIG: 100, SMALL: 5})
    peer = entry({BIG: 100, SMALL: 5}, verified=False)
    assert to_verify(src, peer) == sorted([BIG, SMALL])
    assert f"blobs/{BIG}" in needs(src, peer)  # until the hash check records them


def test_a_truncated_or_known_corrupt_blob_is_resent() -> None:
    src = entry({BIG: 100, SMALL: 5})
    peer = entry({BIG: 60, SMALL: 5})
    assert needs(src, peer) == [f"blobs/{BIG}"]
    peer = entry({BIG: 100, SMALL: 5})
    peer.checks[BIG] = Check(False, peer.blobs[BIG], "ff" * 32)
    assert to_verify(src, peer) == []
    assert needs(src, peer) == [f"blobs/{BIG}"]


def test_peers_lacking_the_same_paths_share_one_stream() -> None:
    groups = group_by_need({"n2": ["a", "b"], "n3": ["a", "b"], "n4": ["b"], "n5": []})
    assert sorted((sorted(nodes), paths) for nodes, paths in groups) == [
        (["n2", "n3"], ["a", "b"]), (["n4"], ["b"])]


def test_source_problems_and_no_ref_for_a_snapshot_the_source_cannot_complete() -> None:
    src = entry({SMALL: 5})  # the big blob is missing at the source: a dangling link
    src.checks[SMALL] = Check(False, src.blobs[SMALL], "00" * 20)
    p = source_problems(src)
    assert p.dangling == (f"snapshots/{C1}/model.safetensors",)
    assert p.corrupt == (SMALL,)
    plan = needs(src, None)
    assert "refs/main" not in plan and f"snapshots/{C1}/model.safetensors" not in plan


def test_presence_compares_nodes_to_find_missing_files() -> None:
    full = entry({BIG: 100, SMALL: 5})
    partial = entry({SMALL: 5}, files={"config.json": SMALL})
    states = evaluate("org/m", {"n1": full, "n2": partial, "n3": None}, C1)
    assert states["n1"].complete and states["n1"].verified
    assert not states["n2"].complete and "1 of 2 files missing" in states["n2"].reason
    assert not states["n3"].complete and "not in this node's cache" in states["n3"].reason


def test_presence_flags_corrupt_wrong_size_unverified_and_interrupted() -> None:
    good = entry({BIG: 100, SMALL: 5})
    corrupt = entry({BIG: 100, SMALL: 5})
    corrupt.checks[BIG] = Check(False, corrupt.blobs[BIG])
    short = entry({BIG: 90, SMALL: 5}, verified=False)
    unverified = entry({BIG: 100, SMALL: 5}, verified=False)
    cut = entry({SMALL: 5})
    cut.partial[BIG + ".dgxc-incoming"] = 40
    s = evaluate("org/m", {"a": good, "b": corrupt, "c": short, "d": unverified, "e": cut}, C1)
    assert "failed their hash check" in s["b"].reason and not s["b"].complete
    assert "wrong size" in s["c"].reason and not s["c"].complete
    assert s["d"].complete and not s["d"].verified and "not verified" in s["d"].reason
    assert not s["e"].complete and "interrupted" in s["e"].reason


def test_start_check_needs_the_heads_commit_and_the_same_ref_everywhere() -> None:
    head = entry({BIG: 100, SMALL: 5}, commit=C2, main=C2)
    stale = entry({BIG: 100, SMALL: 5}, commit=C1, main=C1)
    no_ref = entry({BIG: 100, SMALL: 5}, commit=C2, main=None)
    down = ConnectError("n4", "connection refused")
    s = revision_presence("org/m", {"n1": head, "n2": stale, "n3": no_ref, "n4": down},
                          "main", prefer="n1")
    assert s["n1"].complete and s["n1"].commit == C2
    assert not s["n2"].complete and f"points to {C1[:12]}" in s["n2"].reason
    assert not s["n3"].complete and "refs/main is missing" in s["n3"].reason
    assert not s["n4"].complete and s["n4"].unreachable
    pinned = revision_presence("org/m", {"n1": head, "n3": no_ref}, C2, prefer="n1")
    assert pinned["n3"].complete  # a commit hash needs no ref


def test_download_argv_carries_the_token_only_as_an_env_file() -> None:
    settings = ContainerSettings(env={"HF_ENDPOINT": "http://mirror"})
    argv = download_argv(settings, "img:ctx-1", RepoId.parse("org/m"), "v1",
                         hf_home="/h/.cache/hf", user="1000:1000", name="dgxc-x-model-pull",
                         env_file="/s/e.env")
    assert argv[argv.index("--env-file") + 1] == "/s/e.env"
    assert "-v" in argv and "/h/.cache/hf:/root/.cache/huggingface" in argv
    assert argv[-4:] == ["download", "org/m", "--revision", "v1"]
    assert "HF_ENDPOINT=http://mirror" in argv and not any("TOKEN" in a for a in argv)
    assert argv[argv.index("--user") + 1] == "1000:1000" and "--rm" in argv
    # a download needs no GPU, RDMA device or extra docker options of the Ray containers
    assert not {"--gpus", "--device", "--cap-add", "--ulimit", "--ipc"} & set(argv)
    assert argv[argv.index("--network") + 1] == "host"


def test_hub_unreachable_is_explained() -> None:
    text = (FIXTURES / "download_no_network.txt").read_text().split("\n", 1)[1]
    msg = explain(text, RepoId.parse("Qwen/Qwen3-0.6B"), None, 1)
    assert msg.startswith("cannot reach the Hugging Face hub")
    assert "Temporary failure in name resolution" in msg
    assert "dgxcluster model sync Qwen/Qwen3-0.6B" in msg


def test_auth_and_revision_failures_are_explained() -> None:
    repo = RepoId.parse("org/gated")
    assert "HF_TOKEN" in explain("huggingface_hub.errors.GatedRepoError: 401 Client Error", repo,
                                 None, 1)
    assert "does not exist" in explain("RevisionNotFoundError: Invalid rev id: nope", repo,
                                       "nope", 1)


def test_snapshot_commit_from_hf_output() -> None:
    out = "Fetching 3 files\n/root/.cache/huggingface/hub/models--o--m/snapshots/" + C1 + "\n"
    assert snapshot_commit(out) == C1
    assert snapshot_commit("nothing here") is None
