"""Layer trimming: chain IDs as Docker computes them, and the filter on a `docker save` tar."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

from dgxcluster.image import layers
from dgxcluster.nodeside import layerfilter
from tests import nodeside

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "build"


def test_chain_ids_match_dockers_layer_store() -> None:
    """The fixture lists an image's diffIDs and the chain IDs in that node's layerdb."""
    text = (FIX / "layers_node1.txt").read_text()
    want, held = layers.parse(text)
    assert want is not None and len(want) == 5
    on_disk = {ln.split()[-1] for ln in text.splitlines() if ln.startswith("# chain ")}
    assert set(layers.chain_ids(want)) <= on_disk
    assert set(layers.chain_ids(want)) <= held


def test_skippable_is_the_common_bottom_stack() -> None:
    a, b, c, d = (f"sha256:{x * 64}" for x in "abcd")
    r1 = set(layers.chain_ids([a, b, c]))
    r2 = set(layers.chain_ids([a, b]))
    assert layers.skippable([a, b, d], [r1, r2]) == [a, b]
    assert layers.skippable([a, b, d], [r1, set()]) == []
    assert layers.skippable([b, a], [r1]) == []  # same layers, other order: other chain
    assert layers.skippable([a, b], []) == []


def test_a_layer_repeated_above_the_stack_is_kept() -> None:
    a, e, d = (f"sha256:{x * 64}" for x in "aed")
    held = set(layers.chain_ids([a, e]))
    assert layers.skippable([a, e, d, e], [held]) == [a]


def _tar(members: list[tuple[str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _names(data: bytes) -> list[str]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return tar.getnames()


def test_filter_drops_held_legacy_layers_by_content() -> None:
    base, top = b"B" * 5000, b"T" * 700
    v1a, v1b = "1" * 64, "2" * 64
    src = _tar([(f"{v1a}/VERSION", b"1.0"), (f"{v1a}/json", b"{}"), (f"{v1a}/layer.tar", base),
                (f"{v1b}/VERSION", b"1.0"), (f"{v1b}/layer.tar", top),
                ("manifest.json", json.dumps([{"Layers": []}]).encode())])
    out = io.BytesIO()
    n, nbytes = layerfilter.filter_tar(io.BytesIO(src), out, {_digest(base)}, None)
    assert (n, nbytes) == (1, len(base))
    names = _names(out.getvalue())
    assert f"{v1a}/layer.tar" not in names
    assert f"{v1b}/layer.tar" in names and "manifest.json" in names and f"{v1a}/json" in names
    with tarfile.open(fileobj=io.BytesIO(out.getvalue())) as tar:
        f = tar.extractfile(f"{v1b}/layer.tar")
        assert f is not None and f.read() == top


def test_filter_drops_oci_blobs_by_name_and_keeps_long_names() -> None:
    base, cfg = b"B" * 3000, b"{}"
    long_name = "x/" + "y" * 150  # needs a GNU long-name header
    src = _tar([("oci-layout", b"{}"), (f"blobs/sha256/{_digest(base)[7:]}", base),
                (f"blobs/sha256/{_digest(cfg)[7:]}", cfg), (long_name, b"z")])
    out = io.BytesIO()
    n, _ = layerfilter.filter_tar(io.BytesIO(src), out, {_digest(base)}, None)
    assert n == 1
    assert _names(out.getvalue()) == ["oci-layout", f"blobs/sha256/{_digest(cfg)[7:]}", long_name]


def test_filter_with_nothing_to_skip_is_byte_identical() -> None:
    src = _tar([("a/layer.tar", b"data" * 100), ("manifest.json", b"[]")])
    out = io.BytesIO()
    layerfilter.filter_tar(io.BytesIO(src), out, set(), None)
    assert out.getvalue() == src


# -- the filter as a node runs it: `python3 <bundle>.pyz layerfilter ... -- docker save REF` --

def test_filter_program_wraps_the_save_command(tmp_path: Path) -> None:
    base, top = b"B" * 4000, b"T" * 600
    src = _tar([(f"blobs/sha256/{_digest(base)[7:]}", base),
                (f"blobs/sha256/{_digest(top)[7:]}", top), ("index.json", b"{}")])
    (tmp_path / "save.tar").write_bytes(src)
    res = nodeside.run("layerfilter", "--skip", _digest(base), "--spool-dir",
                       str(tmp_path / "spool"), "--", "cat", str(tmp_path / "save.tar"))
    assert res.returncode == 0, res.stderr
    assert _names(res.stdout) == [f"blobs/sha256/{_digest(top)[7:]}", "index.json"]
    assert b"left out 1 layer(s), 4000 bytes" in res.stderr


def test_filter_program_exits_with_the_save_commands_failure() -> None:
    """A failing `docker save` must fail the relay's source: its exit status comes through."""
    res = nodeside.run("layerfilter", "--skip", "sha256:" + "0" * 64, "--", "sh", "-c",
                       "printf short; exit 3")
    assert res.returncode == 3
