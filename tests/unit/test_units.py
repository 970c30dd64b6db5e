"""The one byte formatter: small sizes never read as "0.00 GB" (issue 12, item 5)."""

from __future__ import annotations

import pytest

from dgxcluster.core.units import human_bytes, human_rate


@pytest.mark.parametrize(("n", "text"), [
    (0, "0 B"), (999, "999 B"), (1000, "1.0 kB"), (300_000, "300.0 kB"),
    (999_960, "1.0 MB"),  # rounds up into the next unit, never "1000.0 kB"
    (210_000_000, "210.0 MB"), (300_000_000, "300.0 MB"),
    (35_210_000_000, "35.21 GB"), (1_500_000_000_000, "1.50 TB"),
    (3 * 10**18, "3000.00 PB"),  # the largest unit holds whatever is left
])
def test_sizes(n: int, text: str) -> None:
    assert human_bytes(n) == text


@pytest.mark.parametrize(("n", "text"), [
    (512, "512 B"), (1000, "1.0 KiB"), (1024, "1.0 KiB"), (512 * 1024**2, "512.0 MiB"),
    (1023 * 1024**2, "1.0 GiB"),  # the number stays below 1000, as in decimal units
    (999.96 * 1024**3, "1.0 TiB"),
    (int(65.3e9), "60.8 GiB"), (-4 * 1024**3, "-4.0 GiB"),
])
def test_binary_sizes(n: int, text: str) -> None:
    """Memory, as vLLM's start-up log and `vllmcli.fit` show it."""
    assert human_bytes(n, binary=True) == text


def test_rates() -> None:
    assert human_rate(1_250_000_000, 1.0) == "1.25 GB/s"
    assert human_rate(5_000_000, 2.0) == "2.5 MB/s"
    assert human_rate(999.7, 1.0) == "1.0 kB/s"
    assert human_rate(10, 0) == "-"
