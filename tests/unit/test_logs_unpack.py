"""A node's log folder arrives as a tar stream and is unpacked here, redacted, never outside."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

from dgxcluster.logs.unpack import TarUnpacker
from dgxcluster.secrets import CollectedRedactor

TOKEN = "hf_" + "A1b2C3d4E5f6G7h8I9j0K1l2"


def _tar(members: list[tuple[str, bytes | None, str]], gz: bool = False) -> bytes:
    """(name, data, kind) with kind file | dir | symlink."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz" if gz else "w") as tar:
        for name, data, kind in members:
            info = tarfile.TarInfo(name)
            info.mtime = 2_000_000_000 if "new" in name else 1_000_000_000
            if kind == "dir":
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            elif kind == "symlink":
                info.type = tarfile.SYMTYPE
                info.linkname = "/etc/shadow"
                tar.addfile(info)
            else:
                assert data is not None
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _unpack(data: bytes, target: Path, **kw: object) -> TarUnpacker:
    u = TarUnpacker(target, CollectedRedactor(), **kw)  # type: ignore[arg-type]
    for i in range(0, len(data), 1000):  # in pieces, as the SSH channel delivers them
        u.feed(data[i:i + 1000])
    u.close()
    return u


def test_files_land_below_the_target_redacted(tmp_path: Path) -> None:
    data = _tar([("session/logs", None, "dir"),
                 ("session/logs/raylet.out", f"start\nHF_TOKEN={TOKEN}\nok\n".encode(), "file"),
                 ("session/logs/gcs.out", b"gcs up\n" * 5000, "file")], gz=True)
    u = _unpack(data, tmp_path / "out")
    assert u.error is None and u.files == 2 and u.skipped == []
    raylet = (tmp_path / "out" / "session" / "logs" / "raylet.out").read_text()
    assert TOKEN not in raylet and raylet.startswith("start\nHF_TOKEN=") and raylet.endswith("ok\n")
    assert (tmp_path / "out" / "session" / "logs" / "gcs.out").read_bytes() == b"gcs up\n" * 5000


def test_unsafe_paths_and_links_are_skipped_never_written(tmp_path: Path) -> None:
    data = _tar([("../escape.txt", b"x", "file"), ("/abs.txt", b"x", "file"),
                 ("ok/link", None, "symlink"), ("ok/a.txt", b"a", "file")])
    u = _unpack(data, tmp_path / "out")
    assert sorted(u.skipped) == ["../escape.txt (unsafe path)", "/abs.txt (unsafe path)",
                                 "ok/link (not a regular file)"]
    assert [p.name for p in (tmp_path / "out").rglob("*") if p.is_file()] == ["a.txt"]
    assert not (tmp_path / "escape.txt").exists()


def test_strip_and_since_pick_what_is_kept(tmp_path: Path) -> None:
    data = _tar([("top/old.log", b"old", "file"), ("top/new.log", b"new", "file")])
    u = _unpack(data, tmp_path / "out", strip=1, since=1_500_000_000)
    assert u.files == 1 and (tmp_path / "out" / "new.log").read_bytes() == b"new"
    assert not (tmp_path / "out" / "old.log").exists()


def test_an_empty_or_broken_stream_is_an_error_not_an_exception(tmp_path: Path) -> None:
    assert _unpack(b"", tmp_path / "a").error == "empty archive"
    broken = _unpack(_tar([("f.txt", b"x" * 5000, "file")])[:700], tmp_path / "b")
    assert broken.error is not None and broken.error.startswith("could not unpack")
