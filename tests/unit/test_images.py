"""The image definitions: hadolint-clean, and the GB10 entrypoint's modes route as documented.

The GB10 image cannot be built here (no registry access for its NGC base, no GPU), so its
entrypoint runs against stand-ins for ray/vllm/nccl-tests that print their arguments.
"""

from __future__ import annotations

import http.server
import importlib.util
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[2]
IMAGES = REPO / "images"
GB10 = IMAGES / "vllm-gb10"
HADOLINT = Path(sys.executable).with_name("hadolint")


@pytest.mark.parametrize("dockerfile", ["vllm-gb10/Dockerfile", "testbed/Dockerfile"])
def test_hadolint_finds_nothing(dockerfile: str) -> None:
    p = subprocess.run([str(HADOLINT), "--failure-threshold", "warning", str(IMAGES / dockerfile)],
                       capture_output=True, text=True, check=False)
    assert p.returncode == 0, p.stdout + p.stderr


def test_gb10_image_pins_and_secrets() -> None:
    text = (GB10 / "Dockerfile").read_text()
    assert "ARG BASE_IMAGE=nvcr.io/nvidia/vllm:26.10-py3" in text and ":latest" not in text
    assert '"ray[default]==${RAY_VERSION}"' in text and "ARG RAY_VERSION=2.57.1" in text
    assert "ARG VLLM_VERSION=0.31.0" in text  # NVIDIA's 26.10 release notes: vLLM 0.31.0
    assert 'dgxcluster.ray-version="${RAY_VERSION}"' in text
    assert 'dgxcluster.vllm-version="${VLLM_VERSION}"' in text
    # VLLM_PORT is vLLM's own base port for distributed communication, not the API port.
    assert "VLLM_PORT" not in text
    assert "TORCH_CUDA_ARCH_LIST=12.1a" in text and "code=sm_121" in text
    assert "--mount=type=secret,id=HF_TOKEN" in text
    assert "ARG HF_TOKEN" not in text and "ENV HF_TOKEN" not in text
    assert "HEALTHCHECK" in text and "USER ${APP_UID}" in text


@pytest.fixture
def standins(tmp_path: Path) -> Path:
    """Stand-ins for the image's tools (ray, vllm, nccl-tests): they print their argv."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("ray", "vllm", "all_gather_perf", "all_reduce_perf"):
        f = bin_dir / tool
        f.write_text(f'#!/bin/sh\necho {tool} "$@"\n')
        f.chmod(0o755)
    return bin_dir


def _entry(bin_dir: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    full = {"PATH": f"{bin_dir}:/usr/bin:/bin", **env}
    return subprocess.run(["bash", str(GB10 / "entrypoint.sh"), *args], capture_output=True,
                          text=True, env=full, check=False)


def test_entrypoint_modes(standins: Path) -> None:
    p = _entry(standins, "ray-head", "--verbose", VLLM_HOST_IP="10.0.0.1", RAY_NUM_GPUS="1")
    assert p.stdout.split() == ["ray", "start", "--head", "--block", "--node-ip-address=10.0.0.1",
                                "--port=6379", "--dashboard-host=0.0.0.0", "--dashboard-port=8265",
                                "--num-gpus=1", "--verbose"]
    p = _entry(standins, "ray-worker", VLLM_HOST_IP="10.0.0.2", RAY_HEAD_ADDRESS="10.0.0.1:6379")
    assert "--address=10.0.0.1:6379" in p.stdout and "--node-ip-address=10.0.0.2" in p.stdout
    assert _entry(standins, "serve", "m", "--tensor-parallel-size", "2").stdout.split() == [
        "vllm", "serve", "m", "--tensor-parallel-size", "2"]
    assert _entry(standins, "nccl-test", "all_reduce", "-g", "1").stdout.split() == [
        "all_reduce_perf", "-g", "1"]
    assert _entry(standins, "nccl-test").stdout.split() == ["all_gather_perf"]
    assert _entry(standins, "echo", "as", "given").stdout == "as given\n"


def test_entrypoint_refuses_a_ray_mode_without_the_fabric_ip(standins: Path) -> None:
    p = _entry(standins, "ray-head")
    assert p.returncode != 0 and "VLLM_HOST_IP" in p.stderr
    assert _entry(standins, "nccl-test", "nope").returncode == 2


def _healthcheck() -> ModuleType:
    spec = importlib.util.spec_from_file_location("healthcheck", GB10 / "healthcheck.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


HC = _healthcheck()
TINI = ["/usr/bin/tini", "--", "/usr/local/bin/dgxcluster-entrypoint"]
RAY = ["/usr/bin/python3", "/usr/local/bin/ray"]
VLLM = ["/usr/bin/python3", "/usr/local/bin/vllm"]


def ray_head(dashboard: int = 8265) -> dict[int, list[str]]:
    """The processes of a head container as `start` runs it (serving/plan.ray_command)."""
    args = ["start", "--head", "--block", "--node-ip-address=10.0.0.1", "--port=6379",
            f"--dashboard-port={dashboard}", "--num-gpus=1"]
    return {1: TINI + ["ray", *args], 7: RAY + args}


class Answers:
    """Fake HTTP statuses by URL path for check(); None = connection refused."""

    def __init__(self, **by_path: int | None) -> None:
        self.by_path = {"/" + k.replace("__", "/"): v for k, v in by_path.items()}
        self.asked: list[str] = []

    def __call__(self, url: str) -> int | None:
        self.asked.append(url)
        return next((v for k, v in self.by_path.items() if url.endswith(k)), None)


def test_roles_from_what_start_runs() -> None:
    assert HC.role(ray_head()[1]) == "ray-head" and HC.role(ray_head()[7]) == "ray-head"
    worker = TINI + ["ray", "start", "--block", "--address=10.0.0.1:6379", "--node-ip-address=10.0.0.2"]
    assert HC.role(worker) == "ray-worker"
    assert HC.role(VLLM + ["serve", "m", "--port", "9000"]) == "vllm"
    assert HC.role(TINI + ["vllm", "serve", "m", "--headless", "--nnodes", "2"]) == "vllm-headless"
    assert HC.role(["python3", "-m", "vllm.entrypoints.openai.api_server", "--model", "m"]) == "vllm"
    assert HC.role(TINI + ["serve", "m"]) == "vllm" and HC.role(TINI + ["ray-head"]) == "ray-head"
    assert HC.role(["/bin/bash"]) == ""
    assert HC.option(["x", "--port", "9000", "--port=9001"], "--port", "8000") == "9001"


def test_ray_head_checks_gcs_on_its_dashboard_port_and_vllm_while_loading() -> None:
    procs = ray_head(dashboard=8300)
    ok, text = HC.check(procs, Answers(api__gcs_healthz=200))
    assert ok and text == "healthy: ray-head"
    procs[40] = VLLM + ["serve", "m", "--port", "9000", "--tensor-parallel-size", "2"]
    ask = Answers(api__gcs_healthz=200, health=None)
    ok, text = HC.check(procs, ask)
    assert ok and "vLLM loading (port 9000 not open yet)" in text  # exec'd, still loading
    assert "http://127.0.0.1:8300/api/gcs_healthz" in ask.asked
    assert "http://127.0.0.1:9000/health" in ask.asked
    ok, text = HC.check(procs, Answers(api__gcs_healthz=200, health=503))
    assert not ok and "vLLM /health on 9000 answered 503" in text
    ok, text = HC.check(procs, Answers(api__gcs_healthz=500, health=200))
    assert not ok and "Ray head: GCS not healthy (dashboard port 8300)" in text


def test_ray_worker_checks_its_raylet() -> None:
    args = ["start", "--block", "--address=10.0.0.1:6379", "--node-ip-address=10.0.0.2"]
    procs = {1: TINI + ["ray", *args], 9: RAY + args}
    ask = Answers(api__local_raylet_healthz=200)
    assert HC.check(procs, ask) == (True, "healthy: ray-worker")
    assert ask.asked == ["http://127.0.0.1:52365/api/local_raylet_healthz"]
    assert not HC.check(procs, Answers(api__local_raylet_healthz=None))[0]


def test_native_vllm_container_must_listen_and_headless_workers_serve_no_api() -> None:
    cmd = ["serve", "m", "--port", "8100", "--nnodes", "2", "--node-rank", "0"]
    procs = {1: TINI + ["vllm", *cmd], 8: VLLM + cmd}
    assert HC.check(procs, Answers(health=200)) == (True, "healthy: vLLM API on 8100")
    ok, text = HC.check(procs, Answers(health=None))
    assert not ok and text == "vLLM is not listening on 8100"
    headless = ["serve", "m", "--headless", "--nnodes", "2", "--node-rank", "1"]
    ask = Answers()
    assert HC.check({1: TINI + ["vllm", *headless], 8: VLLM + headless}, ask) == (
        True, "healthy: vLLM headless worker")
    assert ask.asked == []
    assert HC.check({1: ["/bin/bash"]}, Answers())[0]


class _Health(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        self.send_response(self.status)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[http.server.HTTPServer]:
    srv = http.server.HTTPServer(("127.0.0.1", 0), _Health)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def test_healthcheck_speaks_real_http(server: http.server.HTTPServer) -> None:
    port = server.server_address[1]
    _Health.status = 200
    assert HC.get(f"http://127.0.0.1:{port}/health") == 200
    _Health.status = 503
    assert HC.get(f"http://127.0.0.1:{port}/health") == 503
    _Health.status = 200
    procs = {1: TINI + ["vllm", "serve", "m", "--port", str(port)]}
    assert HC.check(procs) == (True, f"healthy: vLLM API on {port}")


def test_healthcheck_main_prints_the_reason_and_exits_like_docker_expects(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    # (Not on this machine's real /proc: testbeds share the host's PID namespace.)
    monkeypatch.setattr(HC, "processes", lambda: {1: TINI + ["vllm", "serve", "m", "--port", "1"]})
    assert HC.main() == 1
    assert capsys.readouterr().out == "vLLM is not listening on 1\n"
    assert sorted(HC.processes())[0] >= 1  # reads /proc as inside a container
