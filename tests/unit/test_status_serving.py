"""`status` with serving metrics and memory, and `status --watch`: the node's memory fact, the
two scrapes of one-shot status, the kept-alive HTTP connection, the watch's one SSH round
per node and one HTTP request per refresh, and what the live view renders."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest
from rich.console import Console
from typer.testing import CliRunner

from dgxcluster.bench import measured
from dgxcluster.cli.main import app
from dgxcluster.cli.status_watch import render
from dgxcluster.core import httpclient
from dgxcluster.core.endpoint import EndpointProbe
from dgxcluster.core.servingmetrics import MetricsError, Reader
from dgxcluster.core.session import Session
from dgxcluster.facts import ParseError, meminfo
from dgxcluster.inventory import parse_inventory
from dgxcluster.secrets import Redactor
from dgxcluster.status.gather import gather
from dgxcluster.status.probe import STATUS, parse
from dgxcluster.status.report import node_status
from dgxcluster.status.watch import Watch, endpoint_state
from tests.fakes import FakeConnection, Reply
from tests.unit.test_status import DOCKER, INV, TAG, image_line, native_container, probe_output

REAL = Path(__file__).resolve().parents[1] / "fixtures" / "real"
SMI = (REAL / "nvidia-smi_gb10_with_processes_obrienlabs.txt").read_text()
MEM = (REAL / "proc_meminfo_status_lines_dev_host.txt").read_text().split("\n", 1)[1]
URL = "http://10.0.0.1:8000"


def with_mem(text: str, mem: str = MEM, rc: int = 0) -> str:
    return text + "@@ mem\n" + mem + f"@@ rc {rc}\n"


def metrics(prompt: float, gen: float, running: float = 2, waiting: float = 1,
            kv: float = 0.25, ttft: tuple[float, float, float] = (0, 4, 6)) -> str:
    """vLLM's exposition text (names and types of 0.20.1), with TTFT buckets 0.04/0.06/+Inf."""
    lab = 'engine="0",model_name="org/m"'
    return (
        "# TYPE vllm:num_requests_running gauge\n"
        f"vllm:num_requests_running{{{lab}}} {running}\n"
        "# TYPE vllm:num_requests_waiting gauge\n"
        f"vllm:num_requests_waiting{{{lab}}} {waiting}\n"
        "# TYPE vllm:kv_cache_usage_perc gauge\n"
        f"vllm:kv_cache_usage_perc{{{lab}}} {kv}\n"
        "# TYPE vllm:prompt_tokens_total counter\n"
        f"vllm:prompt_tokens_total{{{lab}}} {prompt}\n"
        "# TYPE vllm:generation_tokens_total counter\n"
        f"vllm:generation_tokens_total{{{lab}}} {gen}\n"
        "# TYPE vllm:time_to_first_token_seconds histogram\n"
        f'vllm:time_to_first_token_seconds_bucket{{{lab},le="0.04"}} {ttft[0]}\n'
        f'vllm:time_to_first_token_seconds_bucket{{{lab},le="0.06"}} {ttft[1]}\n'
        f'vllm:time_to_first_token_seconds_bucket{{{lab},le="+Inf"}} {ttft[2]}\n')


class Clock:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.slept.append(s)
        self.now += s


class Server:
    """/metrics answers in order (the last one repeats); an int is an HTTP status."""

    def __init__(self, *answers: str | int | BaseException) -> None:
        self.answers = list(answers)
        self.urls: list[str] = []

    def get(self, url: str, timeout: float) -> tuple[int, str]:
        self.urls.append(url)
        a = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(a, BaseException):
            raise a
        return (a, "") if isinstance(a, int) else (200, a)


# -- the node's memory ------------------------------------------------------------------------

def test_meminfo_reads_the_real_lines_and_refuses_what_is_not_meminfo() -> None:
    m = meminfo.parse(MEM)
    assert m.total_bytes == 24683584 * 1024 and m.available_bytes == 23929940 * 1024
    assert m.used_bytes == (24683584 - 23929940) * 1024
    assert meminfo.parse("MemTotal:  100 kB\n").available_bytes is None  # before Linux 3.14
    for bad in ("", "grep: /proc/meminfo: No such file or directory"):
        with pytest.raises(ParseError, match="/proc/meminfo"):
            meminfo.parse(bad)


def test_the_fact_command_runs_here_and_is_what_the_status_script_runs() -> None:
    import shlex

    out = subprocess.run(meminfo.ARGV, capture_output=True, text=True, check=True).stdout
    mem = meminfo.parse(out)
    assert mem.total_bytes > 0 and mem.available_bytes is not None
    assert shlex.join(meminfo.ARGV) + " 2>&1" in STATUS


def test_node_status_has_gpu_readings_and_memory() -> None:
    st = node_status("n1", "head", parse(with_mem(probe_output(docker=DOCKER, gpu=SMI, gpu_rc=0))))
    assert [(g.utilization_pct, g.temperature_c, g.power) for g in st.gpus] == [
        (10, 45, "11W / N/A")]
    assert st.memory is not None and st.memory.total_bytes == 24683584 * 1024
    doc = st.to_json()
    assert doc["gpus"][0]["name"] == "NVIDIA GB10"  # type: ignore[index]
    assert doc["memory"]["used_bytes"] == st.memory.used_bytes  # type: ignore[index]
    broken = node_status("n1", "head", parse(with_mem(
        probe_output(docker=DOCKER), "grep: /proc/meminfo: No such file or directory\n", 2)))
    assert broken.memory is None and broken.memory_error is not None
    assert "No such file" in broken.memory_error and broken.gpus == []


# -- one-shot status: two scrapes, a second apart -----------------------------------------------

def session_for(fakes: dict[str, FakeConnection]) -> Session:
    inv = parse_inventory(INV, environ={})
    return Session.open(inv, factory=lambda spec: fakes[spec.name], environ={},  # type: ignore[arg-type]
                        redactor=Redactor())


def fakes3(head_extra: str = "") -> dict[str, FakeConnection]:
    return {n: FakeConnection(n).on("", Reply(stdout=with_mem(probe_output(
        docker=DOCKER if n == "n1" else image_line(), gpu=SMI, gpu_rc=0)) + head_extra))
        for n in ("n1", "n2", "n3")}


def test_status_measures_throughput_between_two_scrapes_a_second_apart() -> None:
    clock = Clock()
    server = Server(metrics(100, 50), metrics(2100, 250))
    ready = EndpointProbe(URL, "ready", 200, ["org/m"])
    with session_for(fakes3()) as s:
        report = gather(s, expected=lambda _s: TAG, check_endpoint=lambda _s: ready,
                        reader=lambda _s: Reader(URL, get=server.get, clock=clock,
                                                 sleep=clock.sleep, window_s=None))
    assert server.urls == [f"{URL}/metrics"] * 2
    assert clock.slept == [1.0]  # the nodes answered at once: it waited for the second
    m = report.serving
    assert m is not None and m.interval_s == 1.0
    assert (m.prompt_tps, m.generation_tps) == (2000.0, 200.0)
    assert (m.requests_running, m.requests_waiting, m.kv_cache_usage) == (2, 1, 0.25)
    assert m.window == "since start" and m.ttft.count == 6  # quantiles since the server started
    doc = report.to_json()
    vllm = doc["vllm"]
    assert isinstance(vllm, dict) and vllm["metrics_error"] is None
    assert vllm["metrics"]["prompt_tokens_per_s"] == 2000.0
    assert vllm["metrics"]["kv_cache_usage"] == 0.25 and vllm["metrics"]["models"] == ["org/m"]
    json.dumps(doc)


def test_status_without_a_serving_endpoint_asks_no_metrics_and_says_why_when_they_fail() -> None:
    server = Server(metrics(1, 1))
    with session_for(fakes3()) as s:
        report = gather(s, expected=lambda _s: TAG,
                        check_endpoint=lambda _s: EndpointProbe(URL, "not serving", error="x"),
                        reader=lambda _s: Reader(URL, get=server.get))
    assert server.urls == [] and report.serving is None and report.serving_error is None
    broken = Server(500)
    with session_for(fakes3()) as s:
        report = gather(s, expected=lambda _s: TAG,
                        check_endpoint=lambda _s: EndpointProbe(URL, "ready", 200, ["m"]),
                        reader=lambda _s: Reader(URL, get=broken.get))
    assert len(broken.urls) == 1 and report.serving is None
    assert report.serving_error == "GET /metrics returned 500"


# -- the reader: rates since the last read, latencies over a window ---------------------------

def test_reader_rates_latency_window_and_a_failed_read() -> None:
    clock = Clock()
    texts = [metrics(100 * i, 10 * i, ttft=(0, i, i)) for i in range(40)]
    server = Server(*texts[:3], OSError("timed out"), *texts[3:])
    r = Reader(URL, get=server.get, clock=clock, sleep=clock.sleep, window_s=6.0)
    first = r.read()
    assert first.interval_s is None and first.prompt_tps is None and first.window == "since start"
    windows = []
    for _ in range(2):
        clock.now += 2
        m = r.read()
        assert m.prompt_tps == pytest.approx(50.0) and m.ttft.count == m.latency_window_s / 2
        windows.append(m.latency_window_s)
    clock.now += 2
    with pytest.raises(OSError, match="timed out"):
        r.read()
    clock.now += 2
    after = r.read()  # measured from the last good scrape, 4 s back
    assert after.interval_s == 4.0 and after.prompt_tps == pytest.approx(25.0)
    for _ in range(5):
        clock.now += 2
        windows.append(r.read().latency_window_s)
    assert windows[:2] == [2.0, 4.0] and max(windows) <= 8.0 and windows[-1] >= 6.0
    clock.now += 0.2
    r.read(min_interval=1.0)
    assert clock.slept == [pytest.approx(0.8)]


# -- one HTTP connection across requests ------------------------------------------------------

class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    peers: ClassVar[list[int]] = []
    close_after: ClassVar[set[int]] = set()
    served = 0

    def do_GET(self) -> None:
        cls = type(self)
        cls.served += 1
        if self.client_address[1] not in cls.peers:
            cls.peers.append(self.client_address[1])
        body = metrics(cls.served, 1).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        if cls.served in cls.close_after:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        return None


@pytest.fixture
def http_server() -> Iterator[tuple[str, type[_Handler]]]:
    handler = type("H", (_Handler,), {"peers": [], "close_after": set(), "served": 0})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()
        server.server_close()


def test_keep_alive_reuses_one_connection_and_opens_another_when_the_server_closed_it(
        http_server: tuple[str, type[_Handler]]) -> None:
    url, handler = http_server
    client = httpclient.KeepAlive()
    for _ in range(4):
        status, body = client.get(f"{url}/metrics", 5.0)
        assert status == 200 and "vllm:prompt_tokens_total" in body
    assert client.connections == 1 and len(handler.peers) == 1
    handler.close_after.add(5)
    for _ in range(3):
        assert client.get(f"{url}/metrics", 5.0)[0] == 200
    assert client.connections == 2 and len(handler.peers) == 2 and handler.served == 7
    client.close()
    with pytest.raises(ConnectionRefusedError):
        client.get("http://127.0.0.1:9/metrics", 2.0)


def test_reader_scrapes_over_one_connection(http_server: tuple[str, type[_Handler]]) -> None:
    url, handler = http_server
    r = Reader(url)
    for _ in range(3):
        r.read()
    r.close()
    assert handler.served == 3 and len(handler.peers) == 1


# -- status --watch ---------------------------------------------------------------------------

def test_endpoint_state_from_one_metrics_request() -> None:
    assert endpoint_state(URL, None, ConnectionRefusedError()).state == "not serving"
    assert endpoint_state(URL, None, MetricsError("GET /metrics returned 503")).state == "unhealthy"
    assert endpoint_state(URL, None, TimeoutError("timed out")).state == "unreachable"


def test_watch_makes_one_ssh_round_per_node_and_one_request_per_refresh() -> None:
    clock = Clock()
    server = Server(*(metrics(1000 * i, 100 * i, ttft=(0, 4 * i, 6 * i)) for i in range(5)))
    fakes = fakes3()
    with session_for(fakes) as s:
        w = Watch(s, reader=Reader(URL, get=server.get, clock=clock))
        frames = []
        for _ in range(3):
            frames.append(w.refresh())
            clock.now += 2
        w.close()
    assert [len(f.calls) for f in fakes.values()] == [3, 3, 3]
    assert server.urls == [f"{URL}/metrics"] * 3
    first, _, last = frames
    assert first.status.serving is not None and first.status.serving.prompt_tps is None
    assert last.status.serving is not None and last.status.serving.prompt_tps == 500.0
    assert last.status.vllm.ready and last.status.vllm.models == ["org/m"]
    assert last.late == {} and [n.memory is not None for n in last.status.nodes] == [True] * 3
    doc = last.to_json()
    assert doc["vllm"]["metrics"]["generation_tokens_per_s"] == 50.0  # type: ignore[index]
    json.dumps(doc)

    text = _rendered(last)
    for word in ("n1", "n2", "n3", "head running", "10%", "45C", "11W", "MiB / 23.5 GiB",
                 "serving org/m", "2 running, 1 waiting, KV cache 25.0%",
                 "prompt 500.0 tok/s, generation 50.0 tok/s (last 2.0 s)",
                 "TTFT p50 55 ms p95 60 ms", "(last 4 s, 12 requests)"):
        assert word in text, (word, text)


def _rendered(frame: object, width: int = 200) -> str:
    console = Console(record=True, width=width, force_terminal=False)
    console.print(render(frame, 2.0))  # type: ignore[arg-type]
    return console.export_text()


def test_a_node_still_busy_is_not_asked_again_and_shows_its_age() -> None:
    fakes = fakes3()
    fakes["n2"].rules.insert(0, ("", Reply(stdout=with_mem(probe_output(docker=image_line())),
                                           delay_s=1.5)))
    with session_for(fakes) as s:
        w = Watch(s, reader=Reader(URL, get=Server(ConnectionRefusedError()).get),
                  round_timeout=0.3)
        one = w.refresh()
        two = w.refresh()
        assert len(fakes["n2"].calls) == 1  # its first round had not ended: not asked again
        deadline = time.monotonic() + 10
        while "n2" in w._busy and time.monotonic() < deadline:
            time.sleep(0.05)
        w.refresh()
        w.close()
    assert len(fakes["n2"].calls) == 2 and len(fakes["n1"].calls) == 3
    row = {n.node: n for n in one.status.nodes}["n2"]
    assert row.error == "no answer yet" and one.status.vllm.state == "not serving"
    assert "n2" not in two.late  # it never answered: no row to age
    assert "not serving" in _rendered(two)


def test_late_rows_are_marked_with_their_age() -> None:
    fakes = fakes3()
    with session_for(fakes) as s:
        w = Watch(s, reader=Reader(URL, get=Server(ConnectionRefusedError()).get),
                  round_timeout=0.3)
        w.refresh()
        fakes["n3"].rules.insert(0, ("", Reply(stdout="", delay_s=1.0)))
        late = w.refresh()
        w.close()
    assert set(late.late) == {"n3"}
    assert "old" in _rendered(late)


def test_watch_interval_needs_watch_and_a_sane_value(tmp_path: Path) -> None:
    inv = tmp_path / "inv.yaml"
    inv.write_text(INV)
    alone = CliRunner().invoke(app, ["-i", str(inv), "status", "5"])
    assert alone.exit_code == 2 and "SECONDS: a refresh interval needs --watch" in alone.stderr
    fast = CliRunner().invoke(app, ["-i", str(inv), "status", "--watch", "0.1"])
    assert fast.exit_code == 2 and "SECONDS: must be between 0.5 and 3600" in fast.stderr


# -- what a bench records from the cluster ---------------------------------------------------

def test_bench_measured_from_the_inventory_and_the_running_head() -> None:
    inv = parse_inventory(INV, environ={})
    assert measured.from_inventory(inv) == {
        "model": None, "revision": None, "node_count": 3, "executor": "ray", "topology": None,
        "recipe": None}
    two = parse_inventory(INV.replace("  - {name: n3, host: 10.0.0.3, fabric_ip: 192.0.2.3}\n",
                                      ""), environ={})
    assert measured.from_inventory(two)["topology"] == "direct"
    ps = json.dumps({"ID": "c0ffee", "Names": "dgxc-demo-head", "State": "running",
                     "Image": f"dgxcluster/testbed:{TAG}", "Status": "Up 3 minutes",
                     "Labels": "dgxcluster.cluster=demo,dgxcluster.role=head,"
                               "dgxcluster.config=0123456789abcdef"})
    fakes = {n: FakeConnection(n).on("docker ps", Reply(stdout=ps + "\n")) for n in ("n1", "n2", "n3")}
    with session_for(fakes) as s:
        found, notes = measured.collect(s)
    assert found["config_hash"] == "0123456789abcdef" and found["image_tag"] == TAG
    assert notes == [] and [len(f.calls) for f in fakes.values()] == [1, 0, 0]
    down = {n: FakeConnection(n, unreachable="connection refused") for n in ("n1", "n2", "n3")}
    with session_for(down) as s:
        found, notes = measured.collect(s)
    assert "config_hash" not in found and "connection refused" in notes[0]


def test_watch_shows_the_native_ranks_in_place_of_ray() -> None:
    """A native cluster has no Ray: the live view lists each rank (alive or not), not a Ray
    line that would read as down."""
    vllm = "@@ vllm\npid 7\nlast INFO: Application startup complete.\n@@ rc 0\n"
    fakes = {
        "n1": FakeConnection("n1").on("", Reply(stdout=probe_output(
            docker=image_line() + "\n" + native_container("dgxc-demo-head", "head", "running"))
            + vllm)),
        "n2": FakeConnection("n2").on("", Reply(stdout=probe_output(
            docker=image_line() + "\n" + native_container("dgxc-demo-worker", "worker",
                                                          "running")) + vllm)),
        "n3": FakeConnection("n3").on("", Reply(stdout=probe_output(
            docker=image_line() + "\n" + native_container("dgxc-demo-worker", "worker",
                                                          "exited", 1))
            + "@@ vllm\npid 9\nexit 1\nlast RuntimeError: NCCL error\n@@ rc 0\n")),
    }
    with session_for(fakes) as s:
        w = Watch(s, reader=Reader(URL, get=Server(ConnectionRefusedError()).get))
        frame = w.refresh()
        w.close()
    assert frame.status.executor == "native" and frame.status.ranks is not None
    text = _rendered(frame)
    assert "ranks   2/3 alive (native executor): n1 rank 0 alive, n2 rank 1 alive, " \
        "n3 rank 2 exited (1)" in text, text
    assert "\nray " not in text
