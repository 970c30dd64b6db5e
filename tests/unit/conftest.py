"""Unit tests run in seconds; one that hangs fails after UNIT_TIMEOUT_S instead of stalling CI.

A slower test says so itself with `@pytest.mark.timeout(...)` (the fuzz modules do).
"""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
#: Generous for a loaded 2-core machine; the slowest non-fuzz unit test takes a few seconds.
UNIT_TIMEOUT_S = 120


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # pytest calls this hook with every collected item, whichever conftest defines it: without
    # the folder check a whole-suite run (scripts/test) held the end-to-end tests to 120 s too.
    for item in items:
        if HERE in item.path.parents and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(UNIT_TIMEOUT_S))


@pytest.fixture(autouse=True)
def _own_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """`core.imageid` caches content tags under $XDG_CACHE_HOME: never the user's from a test."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg-cache")))
