"""`dgxcluster bench --quick` with the real llama-benchy (0.4.x) against the vLLM stand-in
served on loopback (tests/standin.py: the stand-in's own HTTP API and pacing, no Ray), with a
local tokenizer and book (no network): the table's figures follow the stand-in's configured
rates, JSON and CSV are written, `--compare` against the first run gives ratios near 1, Ctrl-C
keeps the measured cells, and the API key never appears on any command line.

Tolerances (stated here, checked below): per-request decode rate within 20% of
DECODE / (1 + SLOWDOWN * (c - 1)); single-stream prefill within 20% of PREFILL (llama-benchy
subtracts a latency it measured itself); aggregate decode at c=4 at least 80% of 4 x the
per-request rate; time to first token within 30% of prompt tokens / PREFILL at c=1; rerun
ratios within 1 +/- 0.25. The machine is shared and small: these bounds catch a wrong rate,
a missing slowdown or prefill timed from the wrong chunk, not scheduling noise.
"""

from __future__ import annotations

import json
import random
import threading
import urllib.request
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from dgxcluster.metrics import serving
from tests.clirun import Background, CmdlineSampler
from tests.conftest import run_cli
from tests.standin import loopback

pytestmark = pytest.mark.e2e

KEY = "bench-e2e-key-5d0e91"
PREFILL, DECODE, SLOWDOWN = 8000.0, 64.0, 0.1
STANDIN_ENV = {"DGXCLUSTER_STANDIN_PREFILL_TPS": str(PREFILL),
               "DGXCLUSTER_STANDIN_DECODE_TPS": str(DECODE),
               "DGXCLUSTER_STANDIN_BATCH_SLOWDOWN": str(SLOWDOWN), "VLLM_API_KEY": KEY}
WORDS = ["the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog", "while", "holmes",
         "and", "watson", "walk", "down", "baker", "street", "at", "night", "in", "london", "fog"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    """A whitespace tokenizer (the stand-in counts words) and a book served on loopback."""
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import WhitespaceSplit

    root = tmp_path_factory.mktemp("corpus")
    vocab = {"[UNK]": 0, **{w: i + 1 for i, w in enumerate(dict.fromkeys(WORDS))}}
    tok = Tokenizer(WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = WhitespaceSplit()
    tok.save(str(root / "tokenizer.json"))
    rng = random.Random(18)
    (root / "book.txt").write_text(" ".join(rng.choice(WORDS) for _ in range(50000)))
    server = ThreadingHTTPServer(("127.0.0.1", 0),
                                 partial(SimpleHTTPRequestHandler, directory=str(root)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}/book.txt"
    finally:
        server.shutdown()


class Watcher(threading.Thread):
    """Scrapes the stand-in's /metrics while a bench runs, through dgxcluster's parser."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.running = 0.0
        self.kv = 0.0
        self.scrapes = 0
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.wait(0.2):
            m = serving.summarize(serving.scrape(self.url))
            self.running = max(self.running, m.requests_running or 0.0)
            self.kv = max(self.kv, m.kv_cache_usage or 0.0)
            self.scrapes += 1

    def stop(self) -> None:
        self._halt.set()
        self.join(10)


def bench_args(url: str, corpus: tuple[Path, str], out: Path, *extra: str) -> list[str]:
    return ["bench", "--quick", "--url", f"{url}/v1", "--tokenizer",
            str(corpus[0] / "tokenizer.json"), "--book-url", corpus[1], "--skip-coherence",
            "-o", str(out), *extra]


def expected_decode(c: int) -> float:
    return DECODE / (1 + SLOWDOWN * (c - 1))


def test_bench_quick_follows_the_standins_rates(corpus: tuple[Path, str], tmp_path: Path) -> None:
    env = {"VLLM_API_KEY": KEY, "HOME": str(tmp_path)}
    with CmdlineSampler(KEY) as sampler, loopback(STANDIN_ENV, log=tmp_path / "standin.log") as url:
        watcher = Watcher(url)
        watcher.start()
        first = run_cli(*bench_args(url, corpus, tmp_path / "out"), env=env, timeout=600)
        watcher.stop()
        assert first.returncode == 0, first.stderr
        saved = sorted((tmp_path / "out").glob("bench-*.json"))
        assert len(saved) == 1 and saved[0].with_suffix(".csv").exists()
        result = json.loads(saved[0].read_text())
        assert result["complete"] and result["measured"]["vllm_version"] == "0.0.0+standin"
        assert result["tool"]["version"].startswith("0.4") and result["tool"]["api_key"] is True
        cells = {(c["depth"], c["concurrency"]): c for c in result["cells"]}
        assert set(cells) == {(0, 1), (0, 4), (4096, 1), (4096, 4)}
        for (depth, c), cell in cells.items():
            assert cell["tg_tps_req"]["mean"] == pytest.approx(expected_decode(c), rel=0.2), cell
            if c == 1:
                assert cell["pp_tps"]["mean"] == pytest.approx(PREFILL, rel=0.2), cell
                prompt = 2048 + depth + 6  # two chat messages of 3 template tokens
                assert cell["ttft_ms"]["mean"] == pytest.approx(1000 * prompt / PREFILL, rel=0.3)
            else:
                assert cell["tg_tps"]["mean"] >= 0.8 * c * expected_decode(c), cell
        assert "pp t/s" in first.stdout and "TTFT ms" in first.stdout
        # the stand-in's /metrics, read by dgxcluster's parser, moved with the load
        assert watcher.scrapes > 5 and watcher.running >= 4 and watcher.kv > 0
        after = serving.summarize(serving.scrape(url))
        assert after.requests_running == 0 and after.ttft.count > 0

        again = run_cli(*bench_args(url, corpus, tmp_path / "out", "--compare", str(saved[0])),
                        env=env, timeout=600)
        assert again.returncode == 0, again.stderr
        assert "new / old" in again.stdout
        second = sorted((tmp_path / "out").glob("bench-*.json"))
        assert len(second) == 2
        new = json.loads(second[1].read_text())
        for old_cell, new_cell in zip(result["cells"], new["cells"], strict=True):
            for fig in ("pp_tps", "tg_tps", "ttft_ms"):
                ratio = new_cell[fig]["mean"] / old_cell[fig]["mean"]
                assert ratio == pytest.approx(1.0, abs=0.25), (fig, old_cell, new_cell)
    assert sampler.sweeps > 10 and sampler.hits == []  # the key was on no command line


def test_ctrl_c_keeps_the_cells_already_measured(corpus: tuple[Path, str], tmp_path: Path) -> None:
    with loopback(STANDIN_ENV) as url:
        bg = Background(*bench_args(url, corpus, tmp_path / "out"),
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
