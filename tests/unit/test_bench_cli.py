"""`dgxcluster bench` on the command line: bad options and a missing llama-benchy stop it
before anything runs (exit 2); --dry-run against the stand-in on loopback shows llama-benchy's
command line and never the API key."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dgxcluster.bench import tool
from dgxcluster.cli.main import app
from tests.conftest import run_cli
from tests.standin import loopback

KEY = "bench-cli-key-8c1f"


def test_two_presets_or_a_bad_url_exit_2() -> None:
    both = CliRunner().invoke(app, ["bench", "--quick", "--standard", "--url",
                                    "http://127.0.0.1:9/v1"])
    assert both.exit_code == 2 and "--quick/--standard" in both.stderr
    bad = CliRunner().invoke(app, ["bench", "--url", "spark1:8000"])
    assert bad.exit_code == 2 and "--url" in bad.stderr and bad.exception is not None
    assert isinstance(bad.exception, SystemExit)


def test_llama_benchy_missing_exits_2_with_the_install_command(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(tool.importlib.util, "find_spec", lambda name: None)
    res = CliRunner().invoke(app, ["bench", "--url", "http://127.0.0.1:9/v1"],
                             env={"PATH": str(tmp_path)})
    assert res.exit_code == 2
    assert "llama-benchy is not installed" in res.stderr
    assert "pip install 'dgxcluster[bench]'" in res.stderr


def test_dry_run_asks_the_endpoint_and_prints_the_command_without_the_key(tmp_path: Path) -> None:
    with loopback({"VLLM_API_KEY": KEY}) as url:
        denied = run_cli("bench", "--dry-run", "--url", f"{url}/v1", timeout=60,
                         env={"VLLM_API_KEY": ""})
        assert denied.returncode == 1 and "API key" in denied.stderr
        ok = run_cli("bench", "--dry-run", "--url", f"{url}/v1", "--depth", "0,1024",
                     "--skip-coherence", "-o", str(tmp_path), timeout=60,
                     env={"VLLM_API_KEY": KEY})
    assert ok.returncode == 0, ok.stderr
    out = ok.stdout
    assert out.startswith("llama-benchy --base-url=" + url + "/v1 --model=org/m ")
    assert "--depth 0 1024 --concurrency 1 4" in out and "--skip-coherence" in out
    assert "# API key: from $VLLM_API_KEY" in out and "4 cell(s), 20 measured request(s)" in out
    assert KEY not in out + ok.stderr
    assert not os.listdir(tmp_path)  # a dry run writes nothing
