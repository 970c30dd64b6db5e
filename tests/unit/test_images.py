"""The image definitions: hadolint-clean, and the GB10 entrypoint's modes route as documented.

The GB10 image cannot be built here (no registry access for its NGC base, no GPU), so its
entrypoint runs against stand-ins for ray/vllm/nccl-tests that print their arguments.
"""

from __future__ import annotations

import http.server
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

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
    assert "ARG BASE_IMAGE=nvcr.io/nvidia/vllm:" in text and ":latest" not in text
    assert '"ray[default]==${RAY_VERSION}"' in text and "ARG RAY_VERSION=2.60.0" in text
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


def _health(port: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(GB10 / "healthcheck.py")], capture_output=True,
                          text=True, env={**os.environ, "VLLM_PORT": str(port)}, check=False)


def test_healthcheck_follows_vllm_health(server: http.server.HTTPServer) -> None:
    port = server.server_address[1]
    _Health.status = 200
    assert _health(port).returncode == 0
    _Health.status = 503
    p = _health(port)
    assert p.returncode == 1 and "503" in p.stdout
    _Health.status = 200


def test_healthcheck_without_vllm_listening_is_not_a_failure_outside_serve_mode() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        free = s.getsockname()[1]
    assert _health(free).returncode == 0
