"""Durations as people type them (`--since`)."""

from __future__ import annotations

import pytest

from dgxcluster.core.durations import parse_duration


@pytest.mark.parametrize(("text", "seconds"), [("90s", 90), ("10m", 600), ("1h30m", 5400),
                                               ("2d", 172800), ("1w", 604800), (" 5M ", 300)])
def test_valid(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(("text", "why"), [("", "empty"), ("10", "no unit"), ("ten minutes", "not a"),
                                           ("10m5", "not a"), ("0s", "longer than zero"),
                                           ("-5m", "not a"), ("1.5h", "not a")])
def test_invalid(text: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        parse_duration(text)
