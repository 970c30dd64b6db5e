"""Bad input to `logs`, `status` and `smoke` exits 2 naming the option, contacting nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import run_cli

# 192.0.2.0/24 is TEST-NET-1: nothing answers there, so any contact would hang or fail.
INV = "nodes:\n  - {name: n1, host: 192.0.2.1, fabric_ip: 192.0.2.1}\nssh: {connect_timeout: 1}\n"


@pytest.fixture
def inv(tmp_path: Path) -> Path:
    p = tmp_path / "inv.yaml"
    p.write_text(INV)
    return p


@pytest.mark.parametrize(("args", "option"), [
    (["logs", "--since", "yesterday"], "--since"),
    (["logs", "--since", "10"], "--since"),
    (["logs", "-o", "{file}"], "-o"),
    (["logs", "-o", "{file}/sub"], "-o"),
    (["logs", "--node", "nope"], "--node"),
    (["smoke", "--max-tokens", "0"], "--max-tokens"),
    (["smoke", "--concurrency", "0"], "--concurrency"),
    (["smoke", "--prompt", " "], "--prompt"),
])
def test_bad_option_exits_2_naming_it(inv: Path, tmp_path: Path, args: list[str],
                                      option: str) -> None:
    f = tmp_path / "a-file"
    f.write_text("x")
    argv = [a.replace("{file}", str(f)) for a in args]
    # in tmp_path: `logs` checks its default ./dgxcluster-logs first, and a non-root user
    # may not write the checkout
    p = run_cli("-i", str(inv), *argv, timeout=60, cwd=tmp_path)
    assert p.returncode == 2, p.stderr
    assert p.stderr.startswith(f"error: {option}: "), p.stderr
    assert "Traceback" not in p.stderr


@pytest.mark.parametrize("command", ["logs", "status", "smoke"])
def test_help(command: str) -> None:
    p = run_cli(command, "--help", timeout=60)
    assert p.returncode == 0 and "Usage" in p.stdout
