"""The node-side model agent, run here as it runs on a node (`python3 <bundle>.pyz hfcache`,
real files).

A synthetic cache entry laid out like huggingface_hub's is scanned, streamed and received;
corrupt, hostile and truncated streams must never leave a wrong file under a final name.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from dgxcluster.models.layout import BlobState, parse_scan
from dgxcluster.nodeside import hfcache as nodeagent
from tests import nodeside
from tests.hfcache import build_argv, spec

REPO_DIR = "models--org--tiny"
COMMIT = "c" * 40


def agent(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return nodeside.run("hfcache", *args, stdin=stdin)


def build(hub: Path, files: dict[str, int | str] | None = None) -> dict[str, str]:
    files = files or {"config.json": '{"a": 1}', "model.safetensors": 3 << 20,
                      "sub/tokenizer.json": 5000}
    out = subprocess.run(
        [sys.executable if a == "python3" else a
         for a in build_argv(str(hub), spec("org/tiny", files, commit=COMMIT))],
        capture_output=True, text=True, check=True)
    return dict(json.loads(out.stdout))


def scan(hub: Path, records: Path):  # type: ignore[no-untyped-def]
    res = agent("scan", "--hub", str(hub), "--records", str(records))
    assert res.returncode == 0, res.stderr
    return parse_scan(res.stdout.decode())


def stream(hub: Path, records: Path, paths: list[str], plan: Path) -> bytes:
    plan.write_text(json.dumps({"paths": paths}))
    res = agent("send", "--hub", str(hub), "--repo", REPO_DIR, "--list", str(plan),
                "--records", str(records))
    assert res.returncode == 0, res.stderr
    assert not plan.exists(), "the plan file is for one use"
    return res.stdout


def recv(hub: Path, records: Path, data: bytes) -> subprocess.CompletedProcess[bytes]:
    return agent("recv", "--hub", str(hub), "--repo", REPO_DIR, "--records", str(records),
                 stdin=data)


def all_paths(hub: Path) -> list[str]:
    e = scan(hub, hub.parent / "unused").entries[REPO_DIR]
    return ([f"blobs/{b}" for b in e.blobs] + sorted(e.links) + sorted(e.files))


def test_scan_reads_the_hf_layout(tmp_path: Path) -> None:
    names = build(tmp_path / "hub")
    cache = scan(tmp_path / "hub", tmp_path / "rec")
    e = cache.entries[REPO_DIR]
    assert cache.hub_exists and cache.free_bytes > 0
    assert set(e.blobs) == set(names.values())
    assert e.snapshot(COMMIT) == names
    assert e.refs == {"main": COMMIT}
    assert e.commits == [COMMIT]
    assert len(names["model.safetensors"]) == 64 and len(names["config.json"]) == 40
    assert all(e.blob_state(b) is BlobState.UNVERIFIED for b in e.blobs)


def test_send_recv_copies_everything_and_both_ends_are_verified(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    build(src)
    data = stream(src, tmp_path / "rs", all_paths(src), tmp_path / "plan.json")
    res = recv(dst, tmp_path / "rd", data)
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout)
    assert summary["bad"] == {}
    for rel in ("snapshots/" + COMMIT + "/sub/tokenizer.json", "refs/main"):
        assert (src / REPO_DIR / rel).read_bytes() == (dst / REPO_DIR / rel).read_bytes()
    link = dst / REPO_DIR / "snapshots" / COMMIT / "sub" / "tokenizer.json"
    assert link.is_symlink() and not os.readlink(link).startswith("/")
    got = scan(dst, tmp_path / "rd").entries[REPO_DIR]
    assert all(got.blob_state(b) is BlobState.VERIFIED for b in got.blobs)
    sent = scan(src, tmp_path / "rs").entries[REPO_DIR]
    assert all(sent.blob_state(b) is BlobState.VERIFIED for b in sent.blobs)


def test_a_changed_blob_is_no_longer_verified_even_with_its_old_mtime(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    names = build(src)
    recv(dst, tmp_path / "rd", stream(src, tmp_path / "rs", all_paths(src), tmp_path / "p"))
    blob = dst / REPO_DIR / "blobs" / names["model.safetensors"]
    st = blob.stat()
    with open(blob, "r+b") as fh:
        fh.seek(100)
        fh.write(b"XXXX")
    os.utime(blob, ns=(st.st_atime_ns, st.st_mtime_ns))
    e = scan(dst, tmp_path / "rd").entries[REPO_DIR]
    assert e.blob_state(names["model.safetensors"]) is BlobState.UNVERIFIED
    res = agent("verify", "--hub", str(dst), "--repo", REPO_DIR, "--records",
                str(tmp_path / "rd"), "--remove-bad",
                stdin=json.dumps({"blobs": [names["model.safetensors"]]}).encode())
    report = json.loads(res.stdout)["verified"][names["model.safetensors"]]
    assert report["ok"] is False and report["removed"] is True
    assert not blob.exists()


def test_a_blob_that_does_not_match_its_name_is_never_put_in_place(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    names = build(src)
    bad = src / REPO_DIR / "blobs" / names["model.safetensors"]
    with open(bad, "r+b") as fh:
        fh.write(b"corrupt!")
    data = stream(src, tmp_path / "rs", all_paths(src), tmp_path / "p")
    res = recv(dst, tmp_path / "rd", data)
    assert res.returncode == 0
    summary = json.loads(res.stdout)
    assert list(summary["bad"]) == [names["model.safetensors"]]
    assert not (dst / REPO_DIR / "blobs" / names["model.safetensors"]).exists()
    link = dst / REPO_DIR / "snapshots" / COMMIT / "model.safetensors"
    assert not os.path.lexists(link), "no dangling link to a rejected blob"
    assert not (dst / REPO_DIR / "refs" / "main").exists(), "no ref to an incomplete snapshot"
    e = scan(src, tmp_path / "rs").entries[REPO_DIR]
    assert e.blob_state(names["model.safetensors"]) is BlobState.CORRUPT  # the sender saw it too


def test_a_truncated_stream_leaves_no_file_under_a_final_name(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    names = build(src)
    data = stream(src, tmp_path / "rs", all_paths(src), tmp_path / "p")
    res = recv(dst, tmp_path / "rd", data[: len(data) // 2])
    assert res.returncode != 0
    assert b"stream ended early" in res.stderr
    assert not (dst / REPO_DIR / "blobs" / names["model.safetensors"]).exists()
    e = scan(dst, tmp_path / "rd").entries[REPO_DIR]
    assert e.partial, "the interrupted blob stays under its temporary name"
    res = recv(dst, tmp_path / "rd", data)  # the next receive cleans up and completes
    assert res.returncode == 0
    e = scan(dst, tmp_path / "rd").entries[REPO_DIR]
    assert not e.partial and set(e.blobs) == set(names.values())


def _frame(meta: dict[str, object], body: bytes = b"") -> bytes:
    raw = json.dumps(meta).encode()
    return struct.pack("!I", len(raw)) + raw + body


@pytest.mark.parametrize("meta", [
    {"path": "../../etc/x", "kind": "file", "size": 1},
    {"path": "/etc/x", "kind": "file", "size": 1},
    {"path": "blobs/../../x", "kind": "file", "size": 1},
    {"path": "snapshots/r/evil", "kind": "link", "target": "/etc/passwd"},
    {"path": "snapshots/r/evil", "kind": "link", "target": "../../../../etc/passwd"},
])
def test_hostile_paths_in_a_stream_are_refused(tmp_path: Path, meta: dict[str, object]) -> None:
    data = nodeagent.MAGIC + _frame(meta, b"x") + _frame({"kind": "end"})
    res = recv(tmp_path / "dst", tmp_path / "rd", data)
    assert res.returncode == 2
    assert b"bad path" in res.stderr or b"leaves the cache entry" in res.stderr
    assert not (tmp_path / "etc").exists() and not (tmp_path / "x").exists()
    assert not any(p.is_symlink() for p in (tmp_path / "dst").rglob("*"))
