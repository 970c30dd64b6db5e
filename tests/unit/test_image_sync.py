"""Context sync: only changed files travel; a node's copy is trusted only while it matches."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest

from dgxcluster.core.buildcontext import BuildContext, scan
from dgxcluster.image import sync
from dgxcluster.image.probe import RemoteFile
from tests.children import spawn


@pytest.fixture
def ctx(tmp_path: Path) -> BuildContext:
    (tmp_path / "Dockerfile").write_text("FROM scratch\nCOPY . /\n")
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "main.py").write_text("print('hi')\n")
    (tmp_path / "run.sh").write_text("#!/bin/sh\n")
    (tmp_path / "run.sh").chmod(0o755)
    (tmp_path / "link").symlink_to("run.sh")
    return scan(tmp_path)


def _as_node_holds(plan: sync.SyncPlan) -> tuple[dict[str, RemoteFile], dict[str, object]]:
    """What `find` on a node would list after this plan was applied there."""
    files = {}
    for path, e in plan.manifest["files"].items():
        if e["k"] == "l":
            files[path] = RemoteFile(path, "l", len(e["l"]), e["t"], 0o777, e["l"])
        else:
            files[path] = RemoteFile(path, "f", e["s"], e["t"], e["m"], "")
    return files, plan.manifest


def test_fresh_node_gets_everything(ctx: BuildContext) -> None:
    plan = sync.plan(ctx, None, None)
    assert sorted(f.path for f in plan.send) == ["Dockerfile", "app/main.py", "link", "run.sh"]
    assert plan.delete == () and plan.kept == 0


def test_second_sync_sends_nothing(ctx: BuildContext) -> None:
    files, manifest = _as_node_holds(sync.plan(ctx, None, None))
    again = sync.plan(ctx, files, manifest)
    assert again.send == () and again.delete == ()
    assert again.describe() == "context unchanged (4 files)"


def test_one_changed_file_is_the_only_one_sent(ctx: BuildContext) -> None:
    files, manifest = _as_node_holds(sync.plan(ctx, None, None))
    (ctx.root / "app" / "main.py").write_text("print('changed')\n")
    plan = sync.plan(scan(ctx.root), files, manifest)
    assert [f.path for f in plan.send] == ["app/main.py"]
    assert plan.kept == 3


def test_mode_change_alone_is_sent(ctx: BuildContext) -> None:
    files, manifest = _as_node_holds(sync.plan(ctx, None, None))
    (ctx.root / "app" / "main.py").chmod(0o700)
    assert [f.path for f in sync.plan(scan(ctx.root), files, manifest).send] == ["app/main.py"]


def test_touched_but_identical_file_is_not_resent(ctx: BuildContext) -> None:
    files, manifest = _as_node_holds(sync.plan(ctx, None, None))
    import os

    os.utime(ctx.root / "run.sh", (1, 1))
    assert sync.plan(scan(ctx.root), files, manifest).send == ()


def test_copy_edited_on_the_node_is_resent(ctx: BuildContext) -> None:
    files, manifest = _as_node_holds(sync.plan(ctx, None, None))
    f = files["Dockerfile"]
    files["Dockerfile"] = RemoteFile(f.path, "f", f.size + 5, f.mtime + 60, f.mode, "")
    assert [x.path for x in sync.plan(ctx, files, manifest).send] == ["Dockerfile"]


def test_file_removed_locally_is_deleted_on_the_node(ctx: BuildContext) -> None:
    files, manifest = _as_node_holds(sync.plan(ctx, None, None))
    files["stale.txt"] = RemoteFile("stale.txt", "f", 3, 1, 0o644, "")
    plan = sync.plan(ctx, files, manifest)
    assert plan.delete == ("stale.txt",) and plan.send == ()


def test_unknown_manifest_version_trusts_nothing(ctx: BuildContext) -> None:
    files, manifest = _as_node_holds(sync.plan(ctx, None, None))
    assert len(sync.plan(ctx, files, {**manifest, "version": 99}).send) == 4


def test_stream_is_a_tar_of_the_changed_files_then_the_manifest(ctx: BuildContext) -> None:
    plan = sync.plan(ctx, None, None)
    stream = sync.ContextStream(ctx.root, plan)
    data = b"".join(iter(lambda: stream.read(65536), b""))
    stream.close()
    assert stream.error is None
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        members = {m.name: m for m in tar.getmembers()}
        assert list(members)[-1] == "manifest.json"
        assert members["context/run.sh"].mode == 0o755
        assert members["context/link"].issym() and members["context/link"].linkname == "run.sh"
        body = tar.extractfile("context/app/main.py")
        assert body is not None and body.read() == b"print('hi')\n"
        man = tar.extractfile("manifest.json")
        assert man is not None and json.loads(man.read()) == plan.manifest


def test_closing_early_does_not_hang_the_producer(ctx: BuildContext) -> None:
    (ctx.root / "big").write_bytes(b"x" * (8 << 20))
    stream = sync.ContextStream(ctx.root, sync.plan(scan(ctx.root), None, None))
    assert len(stream.read(100)) == 100
    assert stream.producing  # 8 MB do not fit the pipe: the producer is blocked writing
    stream.close()  # the node stopped reading: the producer must end, not block forever
    assert not stream.producing
    assert isinstance(stream.error, BrokenPipeError)  # it saw the reader go, and said so


def test_argv_carries_deletions_then_docker_argv(ctx: BuildContext) -> None:
    plan = sync.SyncPlan((), ("a b", "-rf"), {}, 0)
    argv = sync.argv("/st/build/x", plan, "", "x:ctx-1", ["docker", "build", "."])
    assert argv[3:] == ["sh", "/st/build/x", "2", "", "x:ctx-1", "a b", "-rf", "docker", "build",
                        "."]


def test_build_stops_and_secrets_go_when_the_client_is_gone(tmp_path: Path) -> None:
    """The node-side build script, run here with sh: once nobody reads its stderr (Ctrl-C,
    a killed sshd), its watchdog stops the build within seconds and the secrets dir goes,
    instead of the build running on to the end of its step."""
    import io
    import subprocess
    import sys
    import tarfile

    secrets = tmp_path / "env" / "build-1"
    secrets.mkdir(parents=True)
    (secrets / "HF_TOKEN").write_text("hf_x")
    empty = io.BytesIO()
    tarfile.open(fileobj=empty, mode="w").close()
    marker = tmp_path / "still-building"
    build = [sys.executable, "-c", "import time; print('building', flush=True); time.sleep(30); "
             f"open({str(marker)!r}, 'w')"]  # one process, as `docker build` is
    argv = sync.argv(str(tmp_path / "build"), sync.SyncPlan((), (), {}, 0), str(secrets),
                     "x:ctx-1", build)
    proc = spawn(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    proc.stdin.write(empty.getvalue())
    proc.stdin.close()
    assert proc.stdout.readline() == b"dgxcluster: context ready\n"
    assert proc.stdout.readline() == b"building\n"
    proc.stderr.close()  # the client went away
    proc.wait(timeout=20)  # well before the build's own 30 s: the watchdog stopped it
    # EOF on stdout: every process holding it, the build included, has exited
    assert proc.stdout.read() == b""
    assert not secrets.exists()
    flock = subprocess.run(["flock", "-n", str(tmp_path / "build" / "lock"), "true"])
    assert flock.returncode == 0  # the context lock is free for the next build
    assert not marker.exists()
