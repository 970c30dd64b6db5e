"""The vLLM stand-in as ranks of vLLM's own multi-node executor (`--nnodes/--node-rank/
--master-addr/--master-port/--headless`), run here as real processes over loopback: the
headless rank connects to rank 0's TCP store, both bind their Gloo side to the interface
GLOO_SOCKET_IFNAME names, rank 0 serves once every rank joined, and a rank that goes away
takes the others down while they load. Messages are vLLM's, torch's and Gloo's own.
"""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.unit.test_vllm_standin_cli import standin  # noqa: F401 - the staged stand-in

pytestmark = pytest.mark.timeout(120)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Serve:
    """One `vllm serve ARGS` stand-in process, its output in a file (read while it runs)."""

    def __init__(self, root: Path, log: Path, args: list[str],
                 env: dict[str, str] | None = None) -> None:
        self.log = log
        argv = [sys.executable, str(root / "vllm"), "serve", "org/m", *args]
        full = {**os.environ, "DGXCLUSTER_STANDIN_VLLM_CLI": str(root / "vllm_cli"),
                "GLOO_SOCKET_IFNAME": "lo", "DGXCLUSTER_STANDIN_LOAD_S": "1",
                "DGXCLUSTER_STANDIN_DIST_TIMEOUT_S": "60", **(env or {})}
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=full)

    @property
    def text(self) -> str:
        return self.log.read_text()

    def wait_for(self, needle: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while needle not in self.text:
            assert self.proc.poll() is None or needle in self.text, self.text
            if time.monotonic() > deadline:  # a bound on the wait, not a speed assertion
                pytest.fail(f"no {needle!r} in:\n{self.text}")
            time.sleep(0.05)

    def exit_code(self, timeout: float = 30) -> int:
        return self.proc.wait(timeout)

    def end(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


class Rank(Serve):
    """A rank of vLLM's multi-node executor (`--nnodes/--node-rank/--master-*`)."""

    def __init__(self, root: Path, tmp: Path, node_rank: int, master_port: int, *extra: str,
                 env: dict[str, str] | None = None, tp: int = 2, nnodes: int = 2) -> None:
        super().__init__(root, tmp / f"rank{node_rank}.log", [
            "-tp", str(tp), "--distributed-executor-backend", "mp", "--nnodes", str(nnodes),
            "--node-rank", str(node_rank), "--master-addr", "127.0.0.1",
            "--master-port", str(master_port), *extra], env)


@pytest.fixture
def ranks(standin: Path, tmp_path: Path) -> Iterator[list[Serve]]:  # noqa: F811
    started: list[Serve] = []
    yield started
    for r in started:
        r.end()


def launch(ranks: list[Serve], root: Path, tmp: Path, *args: object, **kw: object) -> Rank:
    r = Rank(root, tmp, *args, **kw)  # type: ignore[arg-type]
    ranks.append(r)
    return r


def get(port: int, path: str) -> tuple[int, str]:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        c.request("GET", path)
        resp = c.getresponse()
        return resp.status, resp.read().decode()
    finally:
        c.close()


def test_the_headless_rank_joins_rank_0_which_serves_and_each_stops_on_sigterm(
        standin: Path, tmp_path: Path, ranks: list[Rank]) -> None:  # noqa: F811
    master, api = free_port(), free_port()
    worker = launch(ranks, standin, tmp_path, 1, master, "--headless")
    worker.wait_for("The client socket has failed to connect to [127.0.0.1]:"
                    f"{master} (errno: 111 - Connection refused).")  # rank 0 is not up yet
    head = launch(ranks, standin, tmp_path, 0, master, "--host", "127.0.0.1", "--port", str(api))
    head.wait_for("Application startup complete.")
    assert get(api, "/health")[0] == 200 and '"org/m"' in get(api, "/v1/models")[1]
    assert ("Launching vLLM (v0.20.1) headless multiproc executor, with head node address "
            f"127.0.0.1:{master} for torch.distributed process group.") in worker.text
    assert (f"world_size=2 rank=1 local_rank=0 distributed_init_method=tcp://127.0.0.1:{master} "
            "backend=nccl") in worker.text
    assert ("(Worker_TP1 pid=" in worker.text and "rank 1 in world size 2 is assigned as DP rank 0,"
            " PP rank 0, PCP rank 0, TP rank 1, EP rank N/A, EPLB rank N/A") in worker.text
    assert ("DP group leader: node_rank=0, node_rank_within_dp=0, master_addr=127.0.0.1"
            in head.text and "world_size=2, local_world_size=1" in head.text)
    assert "rank 0 in world size 2 is assigned as" in head.text
    assert "Starting vLLM API server" not in worker.text  # a headless rank serves no API
    head.proc.send_signal(signal.SIGTERM)
    assert head.exit_code() == 0
    worker.wait_for("node rank 0 left the process group")
    assert worker.proc.poll() is None  # it waits, as vLLM's headless worker does, until stopped
    worker.proc.send_signal(signal.SIGTERM)
    assert worker.exit_code() == 0


def test_a_rank_killed_while_loading_takes_rank_0_down_at_once(
        standin: Path, tmp_path: Path, ranks: list[Rank]) -> None:  # noqa: F811
    master = free_port()
    slow = {"DGXCLUSTER_STANDIN_LOAD_S": "60"}
    worker = launch(ranks, standin, tmp_path, 1, master, "--headless", env=slow)
    head = launch(ranks, standin, tmp_path, 0, master, "--port", str(free_port()), env=slow)
    for r in (worker, head):
        r.wait_for("Starting to load model org/m")
    worker.proc.kill()
    assert head.exit_code(timeout=15) == 1  # not the 60 s load
    assert "WorkerProc failed to start." in head.text
    assert "RuntimeError: NCCL error: remote process exited or there was a network error" in head.text
    assert ("RuntimeError: Engine core initialization failed. See root cause above. "
            "Failed core proc(s): {'EngineCore_DP0': 1}") in head.text


def test_a_gloo_interface_that_does_not_exist_fails_as_gloo_does(
        standin: Path, tmp_path: Path, ranks: list[Rank]) -> None:  # noqa: F811
    master = free_port()
    worker = launch(ranks, standin, tmp_path, 1, master, "--headless",
                    env={"GLOO_SOCKET_IFNAME": "enp9s9"})
    head = launch(ranks, standin, tmp_path, 0, master, "--port", str(free_port()))
    assert worker.exit_code() == 1
    assert ("RuntimeError: [enforce fail at /pytorch/third_party/gloo/gloo/transport/tcp/"
            "device.cc:84] ifa != nullptr. Unable to find address for: enp9s9") in worker.text
    assert "Exception: WorkerProc initialization failed" in worker.text
    assert head.exit_code() == 1
    assert "remote process exited or there was a network error" in head.text


def test_rank_0_alone_gives_up_waiting_for_the_others(
        standin: Path, tmp_path: Path, ranks: list[Rank]) -> None:  # noqa: F811
    head = launch(ranks, standin, tmp_path, 0, free_port(), "--port", str(free_port()),
                  env={"DGXCLUSTER_STANDIN_DIST_TIMEOUT_S": "1"})
    assert head.exit_code() == 1
    assert ("torch.distributed.DistStoreError: Timed out after 2 seconds waiting for clients. "
            "1/2 clients joined.") in head.text


def test_a_headless_rank_alone_gives_up_connecting_to_rank_0(
        standin: Path, tmp_path: Path, ranks: list[Rank]) -> None:  # noqa: F811
    master = free_port()
    worker = launch(ranks, standin, tmp_path, 1, master, "--headless",
                    env={"DGXCLUSTER_STANDIN_DIST_TIMEOUT_S": "1"})
    assert worker.exit_code() == 1
    assert ("torch.distributed.DistNetworkError: The client socket has timed out after 1000ms "
            f"while trying to connect to (127.0.0.1, {master}).") in worker.text


def test_a_master_port_in_use_fails_rank_0_as_torchs_store_does(
        standin: Path, tmp_path: Path, ranks: list[Rank]) -> None:  # noqa: F811
    with socket.socket() as busy:
        busy.bind(("0.0.0.0", 0))
        busy.listen()
        port = busy.getsockname()[1]
        head = launch(ranks, standin, tmp_path, 0, port, "--port", str(free_port()))
        assert head.exit_code() == 1
    assert ("torch.distributed.DistNetworkError: The server socket has failed to listen on any "
            f"local network address. port: {port}, useIpv6: false, code: -98, "
            "name: EADDRINUSE, message: address already in use") in head.text


@pytest.mark.parametrize(("extra", "nnodes", "tp", "message"), [
    (["--distributed-executor-backend", "ray"], 2, 2,
     "ValueError: nnodes > 1 can only be set when distributed executor backend is mp, uni or "
     "external_launcher."),
    ([], 2, 3, "AssertionError: global world_size (3) must be divisible by nnodes_within_dp (2)."),
    (["--headless", "--api-server-count", "1"], 2, 2,
     "ValueError: --api-server-count=1 cannot be used with --headless"),
])
def test_what_vllm_refuses_before_any_rank_starts(standin: Path, tmp_path: Path,  # noqa: F811
                                                  ranks: list[Rank], extra: list[str],
                                                  nnodes: int, tp: int, message: str) -> None:
    r = launch(ranks, standin, tmp_path, 1, free_port(), *extra, tp=tp, nnodes=nnodes)
    assert r.exit_code() == 1
    assert message in r.text
    assert "world_size=" not in r.text  # refused before any worker started


def test_the_native_flags_are_parsed_by_vllms_own_table(standin: Path, tmp_path: Path,  # noqa: F811
                                                        ranks: list[Rank]) -> None:
    """-n/-r are vLLM's short forms; a bad value exits 2 with vLLM's argparse message."""
    r = launch(ranks, standin, tmp_path, 1, free_port(), "--nnodes", "two")
    assert r.exit_code() == 2
    assert "vllm serve: error: argument --nnodes/-n: invalid int value: 'two'" in r.text
