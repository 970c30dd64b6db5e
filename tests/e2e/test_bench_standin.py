"""`dgxcluster bench` with the real llama-benchy (0.4.x) against the vLLM stand-in served on
loopback (tests/standin.py: the stand-in's own HTTP API and pacing, no Ray), with a local
tokenizer and book (no network): Ctrl-C keeps the cells already measured, and the endpoint's
API key never appears on any command line on this machine while llama-benchy runs.

The full `--quick` sweep, its figures against the stand-in's rates, `--compare` and `status`
under load run against a started testbed cluster in test_serving_load.py.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.benchcorpus import Corpus, serve_corpus
from tests.clirun import Background, CmdlineSampler
from tests.standin import loopback

pytestmark = pytest.mark.e2e

KEY = "bench-e2e-key-5d0e91"
STANDIN_ENV = {"DGXCLUSTER_STANDIN_PREFILL_TPS": "8000", "DGXCLUSTER_STANDIN_DECODE_TPS": "64",
               "DGXCLUSTER_STANDIN_BATCH_SLOWDOWN": "0.1", "VLLM_API_KEY": KEY}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Corpus]:
    with serve_corpus(tmp_path_factory.mktemp("corpus")) as c:
        yield c


def test_ctrl_c_keeps_the_cells_already_measured_and_the_key_stays_off_argv(
        corpus: Corpus, tmp_path: Path) -> None:
    with CmdlineSampler(KEY) as sampler, loopback(STANDIN_ENV) as url:
        bg = Background("bench", "--quick", "--url", f"{url}/v1", *corpus.args(),
                        "-o", str(tmp_path / "out"),
                        env={"VLLM_API_KEY": KEY, "HOME": str(tmp_path)})
        bg.wait_for(r"measured pp2048 tg32 @ d0 c1 +\(1/4 cells", timeout=300)
        bg.interrupt()
        code = bg.finish(timeout=120)
        with urllib.request.urlopen(f"{url}/health", timeout=5) as resp:
            assert resp.status == 200
    assert code == 130, bg.stderr
    assert "interrupted: 1 of 4 cell(s) measured" in bg.stderr
    saved = list((tmp_path / "out").glob("bench-*.json"))
    assert len(saved) == 1
    result = json.loads(saved[0].read_text())
    assert not result["complete"] and len(result["cells"]) >= 1
    assert (result["cells"][0]["depth"], result["cells"][0]["concurrency"]) == (0, 1)
    assert result["tool"]["api_key"] is True and KEY not in saved[0].read_text()
    # llama-benchy ran (its interpreter was sampled) and the key was on no command line
    assert sampler.sweeps > 10 and sampler.hits == []
