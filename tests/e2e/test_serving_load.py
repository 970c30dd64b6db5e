"""Serving under load, against one cluster made by the real `build` and `start` on the 2-node
docker testbed (real sshd, dockerd and Ray; vLLM is the testbed's stand-in, paced at the
rates set below through `container.env`; nvidia-smi is simulated hardware replaying a real
GB10 capture), shared by every test of this module:

- `bench --quick` (the real llama-benchy 0.4.x, the endpoint and model from the inventory)
  prints a full table whose figures follow the stand-in's rates, writes JSON and CSV with
  what the cluster runs (config hash, image tag, vLLM version, executor, topology, model,
  node count), and `--compare` against itself gives ratios near 1;
- `status` run while the bench runs shows requests running and KV-cache usage read from
  rank 0's /metrics, and throughput over its interval;
- `status --watch` under a pseudo-terminal renders a few refreshes and exits 0 on SIGINT;
- Ray's metrics agent answers on every node where `metrics targets` points.

Tolerances (stated here, checked below): per-request decode rate within 20% of
DECODE / (1 + SLOWDOWN * (c - 1)); single-stream prefill within 20% of PREFILL (llama-benchy
subtracts a latency it measured itself); aggregate decode at c=4 at least 80% of 4 x the
per-request rate; time to first token within 30% of prompt tokens / PREFILL at c=1; rerun
ratios within 1 +/- 0.25. The machine is shared and small: these bounds catch a wrong rate,
a missing slowdown or prefill timed from the wrong chunk, not scheduling noise.
"""

from __future__ import annotations

import csv
import fcntl
import json
import os
import pty
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.benchcorpus import Corpus, serve_corpus
from tests.children import spawn
from tests.conftest import REPO, Testbed, flat
from tests.e2e.observe import remove_cluster_containers

pytestmark = [pytest.mark.e2e, pytest.mark.docker]

#: A prefill of a second or more at depth 0: the cluster's own latency (the stand-in's steps on
#: a loaded 2-core machine, about 70 ms a request beyond what llama-benchy subtracts) must stay
#: small beside what is measured.
PREFILL, DECODE, SLOWDOWN = 2000.0, 64.0, 0.1
RATES = {"DGXCLUSTER_STANDIN_PREFILL_TPS": str(PREFILL),
         "DGXCLUSTER_STANDIN_DECODE_TPS": str(DECODE),
         "DGXCLUSTER_STANDIN_BATCH_SLOWDOWN": str(SLOWDOWN)}
#: --quick reaches 2048 + 4096 prompt tokens: above the testbed inventory's 4096.
START_ENV = {"DGXCLUSTER_CONTAINER__ENV": json.dumps(RATES),
             "DGXCLUSTER_SERVE__MAX_MODEL_LEN": "16384"}
MODEL = "Qwen/Qwen3-0.6B"


@pytest.fixture(scope="module")
def cluster(testbed_docker: Testbed) -> Iterator[Testbed]:
    tb = testbed_docker
    tb.dgx("stop")
    remove_cluster_containers(tb, tb.name)
    tb.ensure_image()
    tb.ensure_model()
    for node in tb.nodes:
        tb.tb("simhw", node, "healthy")
    try:
        p = tb.dgx("start", env=START_ENV)
        assert p.returncode == 0, p.stderr
        yield tb
    finally:
        tb.dgx("stop")
        for node in tb.nodes:
            tb.tb("simhw", node, "off", check=False)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Corpus]:
    with serve_corpus(tmp_path_factory.mktemp("corpus")) as c:
        yield c


class StatusPoller(threading.Thread):
    """Runs `dgxcluster status --json` again and again, keeping what it said about serving."""

    def __init__(self, tb: Testbed) -> None:
        super().__init__(daemon=True)
        self.tb = tb
        self.metrics: list[dict[str, object]] = []
        self.codes: list[int] = []
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            p = self.tb.dgx("status", "--json", timeout=120)
            self.codes.append(p.returncode)
            vllm = json.loads(p.stdout)["vllm"]
            if vllm["metrics"] is not None:
                self.metrics.append(vllm["metrics"])

    def stop(self) -> None:
        self._halt.set()
        self.join(150)


@dataclass
class BenchRun:
    proc: subprocess.CompletedProcess[str]
    json_path: Path
    csv_path: Path
    result: dict[str, object]
    statuses: list[dict[str, object]] = field(default_factory=list)
    status_codes: list[int] = field(default_factory=list)


def saved(out: Path) -> list[Path]:
    return sorted(out.glob("bench-*.json"))


@pytest.fixture(scope="module")
def first_bench(cluster: Testbed, corpus: Corpus,
                tmp_path_factory: pytest.TempPathFactory) -> BenchRun:
    out = tmp_path_factory.mktemp("bench")
    poller = StatusPoller(cluster)
    poller.start()
    try:
        p = cluster.dgx("bench", "--quick", *corpus.args(), "-o", str(out), timeout=900)
    finally:
        poller.stop()
    assert p.returncode == 0, p.stderr
    paths = saved(out)
    assert len(paths) == 1, list(out.iterdir())
    return BenchRun(p, paths[0], paths[0].with_suffix(".csv"), json.loads(paths[0].read_text()),
                    poller.metrics, poller.codes)


def expected_decode(c: int) -> float:
    return DECODE / (1 + SLOWDOWN * (c - 1))


def test_bench_quick_gives_a_full_table_that_follows_the_standins_rates(
        first_bench: BenchRun) -> None:
    result = first_bench.result
    assert result["complete"] and result["model"] == MODEL
    cells = {(c["depth"], c["concurrency"]): c for c in result["cells"]}  # type: ignore[attr-defined]
    assert set(cells) == {(0, 1), (0, 4), (4096, 1), (4096, 4)}
    for (depth, c), cell in cells.items():
        assert cell["tg_tps_req"]["mean"] == pytest.approx(expected_decode(c), rel=0.2), cell
        if c == 1:
            assert cell["pp_tps"]["mean"] == pytest.approx(PREFILL, rel=0.2), cell
            prompt = 2048 + depth + 6  # two chat messages of 3 template tokens
            assert cell["ttft_ms"]["mean"] == pytest.approx(1000 * prompt / PREFILL, rel=0.3)
        else:
            assert cell["tg_tps"]["mean"] >= 0.8 * c * expected_decode(c), cell
    table = flat(first_bench.proc.stdout)
    assert "pp t/s" in table and "TTFT ms" in table and table.count("2048 32") == 4


def test_the_result_records_what_the_cluster_runs(cluster: Testbed, first_bench: BenchRun) -> None:
    m = first_bench.result["measured"]
    assert isinstance(m, dict)
    label = cluster.node_exec("node1", "docker", "inspect", "-f",
                              '{{index .Config.Labels "dgxcluster.config"}} {{.Config.Image}}',
                              f"dgxc-{cluster.name}-head").stdout.split()
    assert m["config_hash"] == label[0] and f"dgxcluster/testbed:{m['image_tag']}" == label[1]
    with urllib.request.urlopen(f"{_endpoint(cluster)}/version", timeout=10) as resp:
        assert m["vllm_version"] == json.loads(resp.read())["version"]
    assert (m["executor"], m["topology"], m["recipe"], m["node_count"], m["model"]) == (
        "ray", "direct", None, 2, MODEL)
    rows = list(csv.DictReader(first_bench.csv_path.open()))
    assert len(rows) == 4 and {r["config_hash"] for r in rows} == {m["config_hash"]}
    assert {r["depth"] for r in rows} == {"0", "4096"} and all(r["tg_tps"] for r in rows)


def test_status_during_the_bench_saw_the_load_in_the_metrics(first_bench: BenchRun) -> None:
    seen = first_bench.statuses
    assert len(seen) >= 3 and set(first_bench.status_codes) == {0}
    assert max(float(s["requests_running"] or 0) for s in seen) > 0  # type: ignore[arg-type]
    assert max(float(s["kv_cache_usage"] or 0) for s in seen) > 0  # type: ignore[arg-type]
    # tokens/s over status's own interval, while tokens were being generated
    assert max(float(s["generation_tokens_per_s"] or 0) for s in seen) > 0  # type: ignore[arg-type]
    assert all(s["interval_s"] is not None and float(s["interval_s"]) >= 1.0  # type: ignore[arg-type]
               for s in seen)
    assert {tuple(s["models"]) for s in seen} == {(MODEL,)}  # type: ignore[arg-type]


def test_compare_against_itself_gives_ratios_near_one(
        cluster: Testbed, corpus: Corpus, first_bench: BenchRun) -> None:
    out = first_bench.json_path.parent
    p = cluster.dgx("bench", "--quick", *corpus.args(), "-o", str(out), "--compare",
                    str(first_bench.json_path), timeout=900)
    assert p.returncode == 0, p.stderr
    assert "new / old" in p.stdout
    again = saved(out)
    assert len(again) == 2
    new = json.loads(again[1].read_text())
    old_cells = first_bench.result["cells"]
    assert isinstance(old_cells, list)
    for old_cell, new_cell in zip(old_cells, new["cells"], strict=True):
        for fig in ("pp_tps", "tg_tps", "ttft_ms"):
            ratio = new_cell[fig]["mean"] / old_cell[fig]["mean"]
            assert ratio == pytest.approx(1.0, abs=0.25), (fig, old_cell, new_cell)
    printed = [w for w in flat(p.stdout).split() if w.endswith("x")]
    assert len(printed) == 12 and all(0.75 <= float(w[:-1]) <= 1.25 for w in printed), printed


def _endpoint(tb: Testbed) -> str:
    host = next(ln.split()[-1] for ln in tb.inventory.read_text().splitlines()
                if ln.strip().startswith("host:"))
    return f"http://{host}:8000"


def watch_under_pty(tb: Testbed, frames: int, timeout: float = 180) -> tuple[int, str]:
    """`status --watch 1` on a 180x50 pseudo-terminal until `frames` refreshes were drawn,
    then SIGINT, as Ctrl-C sends it; its exit status and everything it wrote."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 180, 0, 0))
    env = {k: v for k, v in os.environ.items() if not k.startswith("DGXCLUSTER_")}
    env["TERM"] = "xterm-256color"
    proc = spawn([sys.executable, "-m", "dgxcluster", "-i", str(tb.inventory),
                  "status", "--watch", "1"], stdin=slave, stdout=slave, stderr=slave,
                  env=env, cwd=str(REPO), start_new_session=True)
    os.close(slave)
    out = b""
    deadline = time.monotonic() + timeout
    try:
        while out.count(b"this refresh") < frames and time.monotonic() < deadline:
            if select.select([master], [], [], 1.0)[0]:
                try:
                    out += os.read(master, 65536)
                except OSError:
                    break  # the child closed the terminal
        proc.send_signal(signal.SIGINT)
        end = time.monotonic() + 60
        while time.monotonic() < end:
            if select.select([master], [], [], 0.5)[0]:
                try:
                    chunk = os.read(master, 65536)
                except OSError:
                    break
                if not chunk:
                    break
                out += chunk
            elif proc.poll() is not None:
                break
        code = proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    return code, out.decode("utf-8", "replace")


def test_bench_goes_through_ssh_when_the_endpoint_does_not_route(
        cluster: Testbed, corpus: Corpus, tmp_path: Path) -> None:
    """Issue 12: the endpoint clients are given (serve.public_host 192.0.2.1, TEST-NET-1)
    does not answer from here; bench finds the head over SSH (serve.endpoint_via auto) and
    gives llama-benchy a local port forwarded through that connection (core.forward). The
    saved result keeps the endpoint clients use and says how it was reached."""
    env = {"DGXCLUSTER_SERVE__PUBLIC_HOST": "192.0.2.1"}
    p = cluster.dgx("bench", "--pp", "256", "--tg", "8", "--depth", "0", "--concurrency", "1,2",
                    "--runs", "1", *corpus.args(), "-o", str(tmp_path), "--json", env=env,
                    timeout=600)
    assert p.returncode == 0, p.stderr
    result = json.loads(p.stdout)
    assert result["complete"] and len(result["cells"]) == 2, result
    assert result["endpoint"] == "http://192.0.2.1:8000/v1"
    assert any("measured through SSH to node1" in n for n in result["notes"]), result["notes"]
    assert "(through http://127.0.0.1:" in flat(p.stderr)
    options = result["tool"]["options"]
    assert any("127.0.0.1" in str(o) for o in options), options


def test_status_watch_renders_live_and_exits_0_on_ctrl_c(cluster: Testbed) -> None:
    code, raw = watch_under_pty(cluster, frames=3)
    assert code == 0, raw[-3000:]
    assert "\x1b[?1049h" in raw and "\x1b[?1049l" in raw  # drawn on the alternate screen
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", raw)
    assert "Traceback" not in text and "error:" not in text
    assert text.count("this refresh") >= 4  # three live frames and the last one, kept on exit
    last = flat(text[text.rindex("cluster " + cluster.name):])
    for word in ("node1 head ok", "node2 worker ok", "head running", "worker running",
                 "10% 45C 11W", "GiB /", f"serving {MODEL}", "running,", "KV cache",
                 "tok/s", "TTFT p50", "ITL p50", "2/2 nodes alive"):
        assert word in last, (word, last)


def test_ray_metrics_agents_answer_where_metrics_targets_points(cluster: Testbed) -> None:
    p = cluster.dgx("metrics", "targets", "--format", "file-sd")
    assert p.returncode == 0, p.stderr
    groups = json.loads(p.stdout)
    ray = [t for g in groups if g["labels"]["job"] == "ray" for t in g["targets"]]
    vllm = [t for g in groups if g["labels"]["job"] == "vllm" for t in g["targets"]]
    assert len(ray) == 2 and len(vllm) == 1

    def scrape(target: str) -> str:
        with urllib.request.urlopen(f"http://{target}/metrics", timeout=10) as resp:
            assert resp.status == 200
            return str(resp.read().decode())

    deadline = time.monotonic() + 120  # the agent exports once its first report is in
    while True:
        try:
            texts = [scrape(t) for t in ray]
            if all("ray_" in t for t in texts):
                break
        except OSError:
            texts = []
        assert time.monotonic() < deadline, f"no Ray metrics at {ray}: {texts}"
        time.sleep(2)
    assert "vllm:num_requests_running" in scrape(vllm[0])
