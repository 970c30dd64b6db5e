"""`dgxcluster model sync|ls` on the testbed: real sshd, real TCP between node namespaces,
each node with its own private HF cache. Models are synthetic, laid out as huggingface_hub
lays them out (tests/hfcache.py), built on the source node itself."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest

from dgxcluster.core.session import Session
from dgxcluster.inventory import load_inventory
from dgxcluster.models.check import model_presence
from tests.children import spawn
from tests.conftest import PREFIX, Testbed, _down, _up
from tests.hfcache import BUILD_SCRIPT, spec

pytestmark = pytest.mark.e2e

HUB = "/root/.cache/huggingface/hub"
COMMIT = "9" * 40


def make_model(tb: Testbed, node: str, repo: str, files: dict[str, int | str],
               seed: int = 0) -> dict[str, str]:
    out = tb.node_exec(node, "python3", "-c", BUILD_SCRIPT, HUB,
                       spec(repo, files, commit=COMMIT, seed=seed, lfs_min=1 << 16))
    return dict(json.loads(out.stdout))


def entry_dir(repo: str) -> str:
    return f"{HUB}/models--{repo.replace('/', '--')}"


def forget(tb: Testbed, repo: str) -> None:
    folder = repo.replace("/", "--")
    for n in tb.nodes:
        tb.node_exec(n, "sh", "-c", 'rm -rf "$1" /root/.local/state/dgxcluster/*/records/models/"$2".*',
                     "sh", entry_dir(repo), f"models--{folder}", check=False)


def sync(tb: Testbed, repo: str, *extra: str, env: dict[str, str] | None = None
         ) -> tuple[int, dict[str, Any]]:
    proc = tb.dgx("model", "sync", repo, "--json", *extra, env=env)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def by_node(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {o["node"]: o for o in report["nodes"]}


def ls(tb: Testbed, repo: str) -> tuple[int, dict[str, dict[str, Any]]]:
    proc = tb.dgx("model", "ls", "--json")
    rows = [r for r in json.loads(proc.stdout) if r["model"] in (repo, "")]
    return proc.returncode, {r["node"]: r for r in rows}


def digests(tb: Testbed, node: str, repo: str) -> str:
    """sha256 of every snapshot file as seen through its link, plus the refs (sorted)."""
    return tb.node_exec(node, "sh", "-c",
                        'cd "$1" && find snapshots refs -type f -o -type l | sort | '
                        'xargs -d "\\n" sha256sum', "sh", entry_dir(repo)).stdout


@pytest.fixture
def model3(testbed3: Testbed) -> Iterator[tuple[Testbed, str, dict[str, str]]]:
    repo = f"org/m3-{int(time.time() * 1000) % 10**8}"
    files: dict[str, int | str] = {"config.json": '{"architectures": ["X"]}',
                                   "model-00001-of-00002.safetensors": 3 << 20,
                                   "model-00002-of-00002.safetensors": 2 << 20,
                                   "tokenizer/tokenizer.json": 40_000}
    names = make_model(testbed3, "node1", repo, files)
    yield testbed3, repo, names
    forget(testbed3, repo)


def test_sync_to_two_peers_is_exact_and_a_second_sync_sends_nothing(model3: Any) -> None:
    tb, repo, names = model3
    code, report = sync(tb, repo)
    assert code == 0, report
    nodes = by_node(report)
    assert nodes["node2"]["status"] == nodes["node3"]["status"] == "changed"
    assert report["streams"] == 1  # both peers lacked the same files: one stream
    want = digests(tb, "node1", repo)
    assert want.count("\n") == 5  # 4 snapshot files + refs/main
    assert digests(tb, "node2", repo) == want == digests(tb, "node3", repo)
    link = tb.node_exec("node2", "readlink",
                        f"{entry_dir(repo)}/snapshots/{COMMIT}/tokenizer/tokenizer.json").stdout
    assert link.strip() == f"../../../blobs/{names['tokenizer/tokenizer.json']}"

    code, again = sync(tb, repo)
    assert code == 0
    assert again["bytes_received"] == 0 and again["streams"] == 0
    assert {o["status"] for o in again["nodes"]} == {"unchanged"}

    code, rows = ls(tb, repo)
    assert code == 0
    for n in tb.nodes:
        assert rows[n]["complete"] and rows[n]["verified"], rows[n]
        assert rows[n]["commit"] == COMMIT and rows[n]["refs"] == ["main"] and rows[n]["files"] == 4


def test_a_corrupt_blob_on_a_peer_is_detected_and_repaired(model3: Any) -> None:
    tb, repo, names = model3
    assert sync(tb, repo)[0] == 0
    blob = f"{entry_dir(repo)}/blobs/{names['model-00001-of-00002.safetensors']}"
    # flip bytes in place, then put the old mtime back: only ctime betrays the change
    tb.node_exec("node2", "sh", "-c",
                 'touch -r "$1" /tmp/ref && printf XXXX | dd of="$1" bs=1 seek=4096 conv=notrunc '
                 '2>/dev/null && touch -r /tmp/ref "$1"', "sh", blob)
    _, rows = ls(tb, repo)
    assert rows["node2"]["complete"] and not rows["node2"]["verified"]
    assert "not verified" in rows["node2"]["reason"]
    assert rows["node3"]["verified"]

    code, report = sync(tb, repo)
    assert code == 0, report
    n2 = by_node(report)["node2"]
    assert n2["status"] == "changed" and "corrupt blob(s) found and replaced" in n2["detail"]
    assert by_node(report)["node3"]["status"] == "unchanged"
    assert digests(tb, "node2", repo) == digests(tb, "node1", repo)
    _, rows = ls(tb, repo)
    assert rows["node2"]["verified"]


def test_a_mismatch_is_copied_once_more_then_fails(model3: Any) -> None:
    tb, repo, names = model3
    blob = f"{entry_dir(repo)}/blobs/{names['model-00002-of-00002.safetensors']}"
    tb.node_exec("node1", "sh", "-c", 'printf XXXX | dd of="$1" bs=1 seek=10 conv=notrunc 2>/dev/null',
                 "sh", blob)
    code, report = sync(tb, repo)
    assert code == 1
    nodes = by_node(report)
    assert nodes["node1"]["status"] == "failed" and "do not match their hash" in nodes["node1"]["detail"]
    for peer in ("node2", "node3"):
        assert nodes[peer]["status"] == "failed"
        assert "failed the hash check after 2 copies" in nodes[peer]["detail"]
        assert tb.node_exec(peer, "test", "-e", blob, check=False).returncode != 0, \
            "a blob that failed its check is never left in place"
    _, rows = ls(tb, repo)
    assert not rows["node1"]["complete"] and "hash check" in rows["node1"]["reason"]
    assert not rows["node2"]["complete"] and "missing" in rows["node2"]["reason"]


def test_model_presence_for_start(model3: Any) -> None:
    tb, repo, _ = model3
    with Session.open(load_inventory(tb.inventory), command="test") as s:
        before = model_presence(s, repo)
        assert before["node1"].complete
        assert not before["node2"].complete and "not in this node's cache" in before["node2"].reason
        assert sync(tb, repo)[0] == 0
        after = model_presence(s, repo)
        assert all(p.complete and p.verified and p.commit == COMMIT for p in after.values())
        assert model_presence(s, repo, COMMIT)["node3"].complete


def _host_veth(tb: Testbed, node: str) -> str:
    """The host side of the node's fabric link (rail 0): where traffic to it can be shaped."""
    line = tb.node_exec(node, "ip", "-o", "link", "show", "enp1s0f1np1").stdout
    peer = line.split("@if", 1)[1].split(":", 1)[0]
    for row in subprocess.run(["ip", "-o", "link"], capture_output=True, text=True,
                              check=True).stdout.splitlines():
        if row.startswith(f"{peer}: "):
            return row.split(": ")[1].split("@")[0]
    raise AssertionError(f"no host link with index {peer}")


def test_a_node_cut_off_mid_sync_is_reported_and_the_next_sync_completes_it(
        healthy3: Testbed) -> None:
    tb = healthy3
    repo = f"org/cut-{int(time.time() * 1000) % 10**8}"
    files: dict[str, int | str] = {f"model-{i:05d}.safetensors": 6 << 20 for i in range(4)}
    names = make_model(tb, "node1", repo, {**files, "config.json": "{}"})
    veth = _host_veth(tb, "node3")
    blobs = f"{entry_dir(repo)}/blobs"
    env = {"DGXCLUSTER_MODEL__IDLE_TIMEOUT_S": "3"}
    # slow the link to node3 (5 MB/s) so the cut lands mid-copy, whatever the machine's load
    subprocess.run(["tc", "qdisc", "add", "dev", veth, "root", "tbf", "rate", "40mbit",
                    "burst", "64k", "latency", "200ms"], check=True)
    proc: subprocess.Popen[str] | None = None
    try:
        proc = spawn(
            [*_cli(tb), "model", "sync", repo, "--json"], stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, env=_env(env))
        first = ""
        for _ in range(600):
            listing = tb.node_exec("node3", "sh", "-c", 'ls "$1" 2>/dev/null', "sh", blobs,
                                   check=False).stdout.split()
            done = [b for b in listing if len(b) == 64]
            if done and any(b.endswith(".dgxc-incoming") for b in listing):
                first = done[0]
                break
            time.sleep(0.05)
        assert first, "the copy to node3 never got under way"
        inode = tb.node_exec("node3", "stat", "-c", "%i", f"{blobs}/{first}").stdout
        tb.tb("cut", "node3")
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 3, err
        nodes = by_node(json.loads(out))
        assert nodes["node3"]["status"] == "unreachable"
        assert nodes["node2"]["status"] == "changed"
        code, rows = ls(tb, repo)
        assert code == 3 and rows["node3"]["unreachable"] and rows["node2"]["complete"]
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        tb.tb("heal", "node3")
        subprocess.run(["tc", "qdisc", "del", "dev", veth, "root"], check=False)
    _, rows = ls(tb, repo)
    assert not rows["node3"]["complete"] and "interrupted" in rows["node3"]["reason"]

    code, report = sync(tb, repo, env=env)
    assert code == 0, report
    n3 = by_node(report)["node3"]
    assert n3["status"] == "changed"
    assert 0 < report["bytes_received"] < 4 * (6 << 20), "complete files are not sent again"
    assert tb.node_exec("node3", "stat", "-c", "%i", f"{blobs}/{first}").stdout == inode
    assert digests(tb, "node3", repo) == digests(tb, "node1", repo)
    _, rows = ls(tb, repo)
    assert rows["node3"]["complete"] and rows["node3"]["verified"]
    assert len(names) == 5
    forget(tb, repo)


def _cli(tb: Testbed) -> list[str]:
    import sys

    return [sys.executable, "-m", "dgxcluster", "-i", str(tb.inventory)]


def _env(extra: dict[str, str]) -> dict[str, str]:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("DGXCLUSTER_")}
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def testbed8() -> Iterator[Testbed]:
    tb = _up(f"{PREFIX}m8", 8, docker=False)
    yield tb
    _down(tb.name)


def test_sync_to_eight_nodes(testbed8: Testbed) -> None:
    tb = testbed8
    repo = "org/eight"
    make_model(tb, "node1", repo, {"config.json": "{}", "model.safetensors": 4 << 20,
                                   "generation_config.json": '{"x": 1}'})
    code, report = sync(tb, repo)
    assert code == 0, report
    assert [o["status"] for o in report["nodes"]] == ["unchanged"] + ["changed"] * 7
    assert report["streams"] == 1
    want = digests(tb, "node1", repo)
    for n in tb.nodes[1:]:
        assert digests(tb, n, repo) == want
    code, again = sync(tb, repo)
    assert code == 0 and again["bytes_received"] == 0
    assert {o["status"] for o in again["nodes"]} == {"unchanged"}
    _, rows = ls(tb, repo)
    assert all(rows[n]["complete"] and rows[n]["verified"] for n in tb.nodes)
