"""`dgxcluster bench` without a server: presets, llama-benchy's command line, its progress
events and reports (captured from llama-benchy 0.4.0, and its repo's published sample),
results saved, loaded and compared, and the run itself against a fake llama-benchy (a small
program speaking its progress and report formats, replaying a captured run)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from dgxcluster.bench import presets, results, run, tool
from dgxcluster.bench.presets import CellKey, Sweep
from dgxcluster.bench.progress import Tracker
from dgxcluster.errors import UsageError
from dgxcluster.secrets import Secret

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
PROGRESS = FIXTURES / "captured" / "llama_benchy_0.4.0_progress_standin.jsonl"
REPORT = FIXTURES / "captured" / "llama_benchy_0.4.0_report_standin.json"
SAMPLE = FIXTURES / "real" / "llama_benchy_0.2.2_report_sample_eugr.json"
#: The sweep of the captured run.
CAPTURED = Sweep(pp=(512,), tg=(16,), depths=(0, 1024), concurrency=(1, 2), runs=2)


def body(path: Path) -> str:
    first, _, rest = path.read_text().partition("\n")
    assert first.startswith("# source:")
    return rest


# -- presets ------------------------------------------------------------------------------------

def test_presets_and_their_cells_in_llama_benchys_order() -> None:
    assert presets.build("quick") == presets.QUICK
    assert [k.label() for k in presets.QUICK.cells()] == [
        "pp2048 tg32 @ d0 c1", "pp2048 tg32 @ d0 c4", "pp2048 tg32 @ d4096 c1",
        "pp2048 tg32 @ d4096 c4"]
    assert presets.QUICK.requests() == (1 + 4) * 2 * 2
    assert presets.STANDARD.requests() == (1 + 8 + 32) * 3 * 3


def test_options_replace_the_presets_lists() -> None:
    s = presets.build("standard", depths=(0, 8192, 0), concurrency=(2,), runs=1)
    assert (s.depths, s.concurrency, s.runs, s.pp) == ((0, 8192), (2,), 1, (2048,))
    assert presets.parse_ints("--depth", "0,4096") == (0, 4096)
    assert presets.parse_ints("--depth", None) == ()


@pytest.mark.parametrize("option,text", [("--pp", ""), ("--pp", "0"), ("--depth", "-1"),
                                         ("--concurrency", "1,x"), ("--tg", "1,,2"),
                                         ("--concurrency", "2000")])
def test_bad_lists_name_the_option(option: str, text: str) -> None:
    with pytest.raises(UsageError, match=option):
        presets.parse_ints(option, text)


def test_an_unknown_preset_or_runs_out_of_range() -> None:
    with pytest.raises(UsageError, match="unknown preset"):
        presets.build("huge")
    with pytest.raises(UsageError, match="--runs"):
        presets.build("quick", runs=0)


# -- llama-benchy's command line ------------------------------------------------------------

def test_the_command_line_never_holds_the_key_and_binds_every_value() -> None:
    argv = tool.argv("/py", "http://h:8000/v1", presets.QUICK, "-weird/model", "served name",
                     Path("/o/r.json"), tokenizer="/t/tokenizer.json", book_url="http://b/x",
                     skip_coherence=True)
    assert argv[:3] == ["/py", "-c", tool.LAUNCHER]
    opts = tool.options(argv)
    assert "--model=-weird/model" in opts and "--served-model-name=served name" in opts
    assert opts[opts.index("--depth") + 1: opts.index("--concurrency")] == ["0", "4096"]
    assert {"--format=json", "--emit-progress=-", "--save-result=/o/r.json", "--skip-coherence",
            "--latency-mode=generation", "--runs=2", "--tokenizer=/t/tokenizer.json",
            "--book-url=http://b/x"} <= set(opts)
    assert not any("api-key" in a for a in opts)


def test_llama_benchy_missing_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch,
                                                      tmp_path: Path) -> None:
    monkeypatch.setattr(tool.importlib.util, "find_spec", lambda name: None)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(UsageError, match=r"pip install 'dgxcluster\[bench\]'"):
        tool.find()


def fake_llama_benchy(root: Path) -> Path:
    """A `llama_benchy` package (with its dist-info) that replays the captured run: progress
    events on stdout, the report at --save-result. FAKE_MODE=interrupt stops after the first
    cell until SIGINT, then saves that cell, as llama-benchy does; FAKE_MODE=fail exits 1."""
    pkg = root / "llama_benchy"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("__version__ = '0.4.0'\n")
    (root / "llama_benchy-0.4.0.dist-info").mkdir()
    (root / "llama_benchy-0.4.0.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: llama-benchy\nVersion: 0.4.0\n")
    (pkg / "__main__.py").write_text(f'''
import json, os, signal, sys, time
PROGRESS = {str(PROGRESS)!r}
REPORT = {str(REPORT)!r}

def main():
    args = sys.argv[1:]
    opt = {{a.split("=", 1)[0]: a.split("=", 1)[1] for a in args if "=" in a}}
    with open(os.environ["FAKE_SEEN"], "w") as f:
        json.dump({{"argv": sys.argv, "cmdline": open("/proc/self/cmdline", "rb").read().decode(),
                   "env_key": os.environ.get("DGXCLUSTER_BENCH_API_KEY")}}, f)
    mode = os.environ.get("FAKE_MODE", "")
    if mode == "fail":
        print("Warmup failed: HTTP 401: Unauthorized", file=sys.stderr)
        sys.exit(1)
    report = json.loads(open(REPORT).read().partition("\\n")[2])
    lines = open(PROGRESS).read().splitlines()[1:]
    stop = {{"now": False}}
    signal.signal(signal.SIGINT, lambda *a: stop.update(now=True))
    ends = 0
    for line in lines:
        print(line, flush=True)
        if json.loads(line)["type"] == "request_end":
            ends += 1
        if mode == "interrupt" and ends == 2:
            while not stop["now"]:
                time.sleep(0.01)
            report["benchmarks"] = report["benchmarks"][:1]
            open(opt["--save-result"], "w").write(json.dumps(report))
            sys.exit(1)
    open(opt["--save-result"], "w").write(json.dumps(report))
''')
    return root


def test_llama_benchy_on_path_through_its_interpreter(monkeypatch: pytest.MonkeyPatch,
                                                        tmp_path: Path) -> None:
    lib = fake_llama_benchy(tmp_path / "lib")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    py = bin_dir / "otherpython"
    py.write_text(f"#!/bin/sh\nPYTHONPATH={lib} exec {sys.executable} \"$@\"\n")
    script = bin_dir / "llama-benchy"
    script.write_text(f"#!{py}\n")
    for p in (py, script):
        p.chmod(0o755)
    monkeypatch.setattr(tool.importlib.util, "find_spec", lambda name: None)
    monkeypatch.setenv("PATH", str(bin_dir))
    assert tool.find() == tool.Tool(str(py), "0.4.0")


# -- progress and reports ------------------------------------------------------------------

def test_progress_events_of_a_real_run_count_every_measured_request() -> None:
    t = Tracker(CAPTURED)
    changed = [t.feed(line) for line in body(PROGRESS).splitlines()]
    assert t.version == "0.4.0" and t.status == "ok" and t.errors == 0
    assert t.done == t.total == 12 and sum(changed) >= 12
    assert t.finished == CAPTURED.cells()
    assert not t.feed("not json") and not t.feed('{"schema": "other", "type": "request_end"}')


def test_cells_from_a_real_report() -> None:
    cells = results.cells_from_report(json.loads(body(REPORT)))
    assert [c.key for c in cells] == CAPTURED.cells()
    c1 = cells[0]
    assert set(c1.stats) == set(results.FIELDS)
    assert 50 < (c1.get("tg_tps") or 0) < 80  # the stand-in decoded at 64 tok/s
    assert (c1.get("ttft_ms") or 0) > 0


def test_cells_from_llama_benchys_published_sample() -> None:
    report = json.loads(body(SAMPLE))
    cells = results.cells_from_report(report)
    assert [c.key for c in cells] == [CellKey(2048, 32, 0, 1), CellKey(2048, 32, 0, 2)]
    assert cells[0].get("pp_tps") == pytest.approx(987.0987514675164)
    assert cells[0].get("tg_tps") == pytest.approx(49.97785098352942)
    # a context-prefill phase (--enable-prefix-caching at depth > 0) is not a cell
    ctx = dict(report["benchmarks"][0], context_size=4096, is_context_prefill_phase=True)
    assert len(results.cells_from_report({"benchmarks": [*report["benchmarks"], ctx]})) == 2


def test_a_report_that_is_not_one_is_refused() -> None:
    with pytest.raises(results.ReportError):
        results.cells_from_report({"version": "x"})
    with pytest.raises(results.ReportError):
        results.cells_from_report({"benchmarks": [{"concurrency": 1}]})


def result_of(report: Path, started: str = "2026-12-01T00:00:00Z") -> results.BenchResult:
    return results.BenchResult(
        endpoint="http://h:8000/v1", model="org/m", served_model="org/m", preset="quick",
        sweep=CAPTURED.to_json(), measured={k: None for k in results.MEASURED_KEYS} | {
            "model": "org/m", "node_count": 2}, tool={"name": "llama-benchy", "version": "0.4.0"},
        started=started, finished=started, complete=True,
        cells=results.cells_from_report(json.loads(body(report))))


def test_save_load_and_csv(tmp_path: Path) -> None:
    r = result_of(REPORT)
    json_path, csv_path = results.save(r, tmp_path / "out", "bench-x")
    back = results.load(json_path)
    assert back.cells == r.cells and back.measured == r.measured and back.complete
    rows = csv_path.read_text().splitlines()
    assert rows[0].split(",") == results.CSV_COLUMNS and len(rows) == 1 + len(r.cells)
    first = dict(zip(results.CSV_COLUMNS, rows[1].split(","), strict=True))
    assert (first["node_count"], first["depth"], first["concurrency"]) == ("2", "0", "1")
    assert float(first["tg_tps"]) == pytest.approx(r.cells[0].get("tg_tps") or 0, abs=0.001)


def test_compare_gives_new_over_old_per_cell() -> None:
    old = result_of(REPORT)
    same = results.compare(old, old)
    assert [(r.pp_tps, r.tg_tps, r.ttft_ms) for r in same.ratios] == [(1.0, 1.0, 1.0)] * 4
    new = result_of(REPORT)
    c = new.cells[0]
    new.cells[0] = results.Cell(c.key, {**c.stats, "tg_tps": results.Stat(
        2 * (c.get("tg_tps") or 0), 0.0)})
    new.cells.pop()
    cmp = results.compare(old, new)
    assert cmp.ratios[0].tg_tps == pytest.approx(2.0)
    assert cmp.only_old == [CAPTURED.cells()[-1]] and cmp.only_new == []


def test_compare_against_a_bare_llama_benchy_report(tmp_path: Path) -> None:
    bare = tmp_path / "published.json"
    bare.write_text(body(SAMPLE))
    loaded = results.load(bare)
    assert loaded.tool["version"] == "0.2.2.dev7+gcd427054e" and loaded.cells


@pytest.mark.parametrize("content", [None, "not json", "[]", '{"benchmarks": 3}'])
def test_a_bad_compare_file_names_the_option(tmp_path: Path, content: str | None) -> None:
    p = tmp_path / "old.json"
    if content is not None:
        p.write_text(content)
    with pytest.raises(UsageError, match="--compare"):
        results.load(p)


# -- the endpoint --------------------------------------------------------------------------

def getter(models: list[dict[str, str]], health: int = 200, models_status: int = 200,
           version: str | None = "0.20.1") -> run.Getter:
    def get(url: str, timeout: float) -> tuple[int, str]:
        if url.endswith("/health"):
            return health, ""
        if url.endswith("/v1/models"):
            return models_status, json.dumps({"object": "list", "data": models})
        if url.endswith("/version") and version:
            return 200, json.dumps({"version": version})
        return 404, "{}"
    return get


def test_resolve_picks_the_served_model_and_its_hf_name() -> None:
    t = run.resolve("http://h:8000", None, getter([{"id": "qwen", "root": "Qwen/Qwen3-8B"}]))
    assert (t.url, t.model, t.served, t.vllm_version) == (
        "http://h:8000/v1", "Qwen/Qwen3-8B", "qwen", "0.20.1")
    local = run.resolve("http://h:8000/v1/", None, getter([{"id": "m", "root": "/models/m"}],
                                                          version=None))
    assert (local.model, local.served, local.vllm_version) == ("m", "m", None)


def test_resolve_with_several_models_needs_model() -> None:
    two = getter([{"id": "a", "root": "org/a"}, {"id": "b", "root": "org/b"}])
    with pytest.raises(UsageError, match=r"--model.*several models"):
        run.resolve("http://h:8000/v1", None, two)
    assert run.resolve("http://h:8000/v1", "org/b", two).served == "b"
    with pytest.raises(UsageError, match="'c' is not served"):
        run.resolve("http://h:8000/v1", "c", two)


def test_resolve_says_why_the_endpoint_is_not_usable() -> None:
    with pytest.raises(run.BenchError, match="unhealthy"):
        run.resolve("http://h:8000/v1", None, getter([], health=503))
    with pytest.raises(run.BenchError, match="API key"):
        run.resolve("http://h:8000/v1", None, getter([], models_status=401))

    def refused(url: str, timeout: float) -> tuple[int, str]:
        raise ConnectionRefusedError("refused")
    with pytest.raises(run.BenchError, match="is the cluster started"):
        run.resolve("http://h:8000/v1", None, refused)


@pytest.mark.parametrize("url", ["h:8000", "ftp://h/v1", "http://", "http://h:0/v1",
                                 "http://h /v1", "http://[::1/v1"])
def test_a_bad_url_names_the_option(url: str) -> None:
    with pytest.raises(UsageError, match="--url"):
        run.split_url(url)


# -- the run, against the fake llama-benchy -------------------------------------------------

TARGET = run.Target("http://127.0.0.1:9/v1", "org/m", "org/m", "0.0.0+standin")


def spec(key: str | None = None) -> run.BenchSpec:
    return run.BenchSpec(url=TARGET.url, preset="quick", sweep=CAPTURED,
                         api_key=Secret(key, "K") if key else None,
                         measured={"node_count": 2, "unrelated": "kept"})


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    lib = fake_llama_benchy(tmp_path / "lib")
    monkeypatch.setenv("PYTHONPATH", str(lib))
    monkeypatch.setenv("FAKE_SEEN", str(tmp_path / "seen.json"))
    return tmp_path


def test_a_run_keeps_every_cell_and_passes_the_key_only_through_the_environment(
        fake: Path) -> None:
    seen: list[int] = []
    out = run.run(spec("s3cr3t-key"), TARGET, tool.Tool(sys.executable, "0.4.0"), fake / "o",
                  "bench-1", lambda t: seen.append(t.done))
    r = out.result
    assert not out.interrupted and out.returncode == 0 and r.complete
    assert [c.key for c in r.cells] == CAPTURED.cells() and seen[-1] == 12
    assert r.measured["node_count"] == 2 and r.measured["vllm_version"] == "0.0.0+standin"
    assert r.measured["model"] == "org/m" and r.tool["api_key"] is True
    child = json.loads((fake / "seen.json").read_text())
    assert child["argv"][-2:] == ["--api-key", "s3cr3t-key"]  # inside the process only
    assert "s3cr3t-key" not in child["cmdline"] and child["env_key"] is None
    assert not any("s3cr3t" in str(o) for o in r.tool["options"])  # type: ignore[attr-defined]
    assert "s3cr3t" not in json.dumps(r.to_json())
    assert not list((fake / "o").glob(".*llama-benchy.json"))  # the temporary report is gone


def test_ctrl_c_keeps_the_cells_already_measured(fake: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_MODE", "interrupt")

    def on_progress(t: Tracker) -> None:
        if t.finished:
            raise KeyboardInterrupt

    out = run.run(spec(), TARGET, tool.Tool(sys.executable, "0.4.0"), fake / "o", "bench-2",
                  on_progress)
    assert out.interrupted and not out.result.complete
    assert [c.key for c in out.result.cells] == CAPTURED.cells()[:1]
    assert any("interrupted: 1 of 4" in n for n in out.result.notes)
    assert os.path.exists(out.log)


def test_a_failed_run_says_what_llama_benchy_said(fake: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_MODE", "fail")
    with pytest.raises(run.BenchError, match="Warmup failed: HTTP 401"):
        run.run(spec(), TARGET, tool.Tool(sys.executable, "0.4.0"), fake / "o", "bench-3")
