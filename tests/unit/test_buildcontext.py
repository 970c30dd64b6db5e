"""Content tags: stable for the same inputs, different for any change docker would see."""

from __future__ import annotations

from pathlib import Path

import pytest

from dgxcluster.core import dockerignore
from dgxcluster.core.buildcontext import scan
from dgxcluster.core.imageid import ImageId
from dgxcluster.errors import UsageError


@pytest.fixture
def ctx(tmp_path: Path) -> Path:
    (tmp_path / "Dockerfile").write_text("FROM scratch\nCOPY app /app\n")
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "main.py").write_text("print('hi')\n")
    (tmp_path / "notes.md").write_text("docs\n")
    (tmp_path / ".dockerignore").write_text("*.md\n")
    return tmp_path


def test_same_inputs_same_tag(ctx: Path) -> None:
    a = scan(ctx)
    b = scan(ctx)
    assert a.content_tag == b.content_tag
    assert a.content_tag.startswith("ctx-") and len(a.content_tag) == 16
    img = ImageId("x/y", a.content_tag)
    assert (img.ref, img.moving) == (f"x/y:{a.content_tag}", "x/y:current")


def test_content_change_changes_tag(ctx: Path) -> None:
    before = scan(ctx).content_tag
    (ctx / "app" / "main.py").write_text("print('bye')\n")
    assert scan(ctx).content_tag != before


def test_ignored_file_change_keeps_tag(ctx: Path) -> None:
    before = scan(ctx).content_tag
    (ctx / "notes.md").write_text("other docs\n")
    assert scan(ctx).content_tag == before
    assert "notes.md" not in [f.path for f in scan(ctx).files]


def test_mode_and_build_args_change_tag(ctx: Path) -> None:
    before = scan(ctx).content_tag
    (ctx / "app" / "main.py").chmod(0o755)
    after_mode = scan(ctx).content_tag
    assert after_mode != before
    assert scan(ctx, build_args={"A": "1"}).content_tag != after_mode


def test_missing_dockerfile_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="Dockerfile"):
        scan(tmp_path)


@pytest.mark.parametrize(
    ("patterns", "path", "out"),
    [
        ("*.md", "a.md", True),
        ("*.md", "dir/a.md", False),
        ("**/*.md", "dir/a.md", True),
        ("build", "build/x/y.o", True),
        ("build\n!build/keep.txt", "build/keep.txt", False),
        ("/tmp", "tmp", True),
        ("a?c", "abc", True),
        ("[ab]x", "bx", True),
        ("# comment\n\n", "x", False),
        ("docs/**", "docs/a/b", True),
    ],
)
def test_dockerignore_semantics(patterns: str, path: str, out: bool) -> None:
    assert dockerignore.excluded(path, dockerignore.parse(patterns)) is out
