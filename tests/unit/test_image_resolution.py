"""The GB10 image's pip step resolves against its base: `ray[default]==${RAY_VERSION}` (the
Dockerfile's own requirement and defaults) with every base package as a constraint, for the
base's CPython on linux/aarch64, against the committed snapshot of the base's packages
(images/vllm-gb10/base-packages; scripts/base_packages.py writes them). Needs PyPI (uv reads
package metadata; its cache makes repeat runs fast): without it the test fails and says so.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from dgxcluster.inventory.schema import RaySettings
from tests.scripts_path import base_packages as bp

DEFAULTS = bp.dockerfile_defaults()


def resolve(base: str, ray: str | None = None) -> bp.Resolution:
    args = dict(DEFAULTS, **({"RAY_VERSION": ray} if ray else {}))
    snap = bp.read_snapshot(bp.snapshot_path(base))
    res = bp.resolve(bp.dockerfile_requirements(args), snap, bp.IMAGE_DIR / "constraints.txt")
    if res.network_error:
        pytest.fail(f"the resolution test needs PyPI and could not reach it: {res.output[:400]}")
    return res


def test_the_dockerfile_step_is_what_is_resolved() -> None:
    assert bp.dockerfile_requirements(DEFAULTS) == [f"ray[default]=={DEFAULTS['RAY_VERSION']}"]
    assert DEFAULTS["BASE_IMAGE"].startswith("nvcr.io/nvidia/vllm:")
    assert RaySettings().version == DEFAULTS["RAY_VERSION"]  # ray.version's default builds as-is


@pytest.mark.parametrize("path", sorted(bp.SNAPSHOTS.glob("*.txt")), ids=lambda p: p.name)
def test_snapshots_name_their_source_and_date(path: Path) -> None:
    snap = bp.read_snapshot(path)
    assert bp.snapshot_path(snap.base) == path
    assert snap.python == "3.12" and snap.platform.startswith("aarch64-manylinux")
    assert "RECONSTRUCTED" in snap.source or "pip list --format=freeze" in snap.source
    assert "# written: 20" in path.read_text()
    assert any(p.startswith("aiohttp==") for p in snap.pins) and len(snap.pins) > 100


def test_default_base_resolves() -> None:
    base = DEFAULTS["BASE_IMAGE"]
    assert bp.snapshot_path(base).exists(), f"no package snapshot for the default base {base}"
    res = resolve(base)
    assert res.ok, res.output
    assert res.pins["ray"] == DEFAULTS["RAY_VERSION"]
    snap = bp.read_snapshot(bp.snapshot_path(base))
    base_pins = dict(p.split("==", 1) for p in snap.pins)
    moved = {n: (v, base_pins[n]) for n, v in res.pins.items() if n in base_pins and base_pins[n] != v}
    assert moved == {}  # Ray never moves what the base ships


def test_default_ray_also_resolves_on_the_previous_base() -> None:
    # Users who pinned 26.05 by digest keep a buildable image with the default ray.version.
    assert resolve("nvcr.io/nvidia/vllm:26.05-py3").ok


def test_a_conflicting_pin_fails_the_suite() -> None:
    # ray[default]==2.60.0 needs aiohttp>=3.14.4; the 26.05 base (vLLM 0.20.1) has aiohttp 3.13.
    res = resolve("nvcr.io/nvidia/vllm:26.05-py3", ray="2.60.0")
    assert not res.ok and not res.network_error
    assert "aiohttp" in res.output and "ray[default]" in res.output


def test_an_unreachable_index_is_reported_as_such(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Nothing listens on port 9 here: uv cannot reach the index and has no cache to fall back on.
    monkeypatch.setenv("UV_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("UV_DEFAULT_INDEX", "http://127.0.0.1:9/simple")
    monkeypatch.setenv("UV_HTTP_RETRIES", "0")
    snap = bp.read_snapshot(bp.snapshot_path(DEFAULTS["BASE_IMAGE"]))
    res = bp.resolve(bp.dockerfile_requirements(DEFAULTS), snap)
    assert not res.ok and res.network_error
    assert "127.0.0.1:9" in res.output
