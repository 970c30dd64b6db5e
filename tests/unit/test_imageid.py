"""Image identity: the expected content tag is the build context's, cached until anything it
reads changes; `expected` gives the one ref every capability runs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dgxcluster.core import imageid
from dgxcluster.core.buildcontext import scan
from dgxcluster.errors import UsageError
from dgxcluster.inventory import load_inventory


def make_context(root: Path) -> None:
    (root / "sub").mkdir(parents=True)
    (root / "Dockerfile").write_text("FROM scratch\nCOPY . /x\n")
    (root / "sub" / "a.txt").write_text("alpha\n")
    (root / ".dockerignore").write_text("ignored/\n")


def test_same_tag_as_scan_then_from_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ctx, cache = tmp_path / "ctx", tmp_path / "cache"
    make_context(ctx)
    want = scan(ctx, "Dockerfile", {"A": "1"}).content_tag
    assert imageid.content_tag(ctx, "Dockerfile", {"A": "1"}, cache) == want
    assert (cache / imageid.CACHE_NAME).exists()

    def no_scan(*_a: object, **_k: object) -> object:
        raise AssertionError("scanned again although nothing changed")

    monkeypatch.setattr("dgxcluster.core.buildcontext.scan", no_scan)
    assert imageid.content_tag(ctx, "Dockerfile", {"A": "1"}, cache) == want


@pytest.mark.parametrize("change", ["content", "new file", "mode", "build arg", "dockerfile"])
def test_any_change_rescans(tmp_path: Path, change: str) -> None:
    ctx, cache = tmp_path / "ctx", tmp_path / "cache"
    make_context(ctx)
    args = {"A": "1"}
    dockerfile = "Dockerfile"
    first = imageid.content_tag(ctx, dockerfile, args, cache)
    a = ctx / "sub" / "a.txt"
    if change == "content":
        a.write_text("alpha\n".upper())  # same size, new mtime
        os.utime(a, ns=(a.stat().st_atime_ns, a.stat().st_mtime_ns + 10**9))
    elif change == "new file":
        (ctx / "sub" / "b.txt").write_text("b")
    elif change == "mode":
        a.chmod(0o600)
    elif change == "build arg":
        args = {"A": "2"}
    else:
        (ctx / "Dockerfile.alt").write_text("FROM scratch\n")
        dockerfile = "Dockerfile.alt"
    again = imageid.content_tag(ctx, dockerfile, args, cache)
    assert again == scan(ctx, dockerfile, args).content_tag != first


def test_missing_context_is_the_usual_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"image\.context"):
        imageid.content_tag(tmp_path / "nope", "Dockerfile", {}, tmp_path / "cache")


def test_unwritable_or_corrupt_cache_only_costs_time(tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    make_context(ctx)
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / imageid.CACHE_NAME).write_text("not json")
    assert imageid.content_tag(ctx, "Dockerfile", {}, cache) == scan(ctx).content_tag


def test_expected_is_the_inventory_image_at_its_context_tag(tmp_path: Path) -> None:
    make_context(tmp_path / "ctx")
    inv_file = tmp_path / "inv.yaml"
    inv_file.write_text("cluster: c\nnodes:\n  - {name: n1, host: 10.0.0.1, fabric_ip: 192.0.2.1}\n"
                        "image: {name: t/img, context: ctx, build_args: {A: '1'}}\n")
    inv = load_inventory(inv_file, environ={})
    img = imageid.expected(inv, tmp_path / "cache")
    # the build args build passes: image.build_args and RAY_VERSION from ray.version
    assert inv.build_args == {"RAY_VERSION": inv.ray.version, "A": "1"}
    tag = scan(tmp_path / "ctx", "Dockerfile", inv.build_args).content_tag
    assert img == imageid.ImageId("t/img", tag)
    assert (img.ref, img.moving) == (f"t/img:{tag}", "t/img:current")


def test_expected_without_a_context_names_the_key(tmp_path: Path) -> None:
    inv_file = tmp_path / "inv.yaml"
    inv_file.write_text("cluster: c\nnodes:\n  - {name: n1, host: 10.0.0.1, fabric_ip: 192.0.2.1}\n"
                        "image: {name: t/img, context: missing}\n")
    with pytest.raises(UsageError, match=r"image\.context") as err:
        imageid.expected(load_inventory(inv_file, environ={}), tmp_path / "cache")
    assert str(tmp_path / "missing") in str(err.value)
