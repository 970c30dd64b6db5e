"""The vLLM stand-in as nodes of vLLM's multi-node data parallel (internal load balancing),
run here as real processes over loopback: the headless node's engines join the head's
`--data-parallel-address:--data-parallel-rpc-port`, the head serves only once every engine
is ready, an engine that goes away takes the head down, and what vLLM refuses is refused.
Messages are vLLM's own (vllm/entrypoints/cli/serve.py, vllm/v1/engine/utils.py).
"""

from __future__ import annotations

import http.client
import json
import signal
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.unit.test_standin_native import Serve, free_port, get
from tests.unit.test_vllm_standin_cli import standin  # noqa: F401 - the staged stand-in

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def started() -> Iterator[list[Serve]]:
    procs: list[Serve] = []
    yield procs
    for p in procs:
        p.end()


def node(procs: list[Serve], root: Path, tmp: Path, name: str, rpc: int, *extra: str,
         dp: int = 2, local: int = 1, env: dict[str, str] | None = None) -> Serve:
    """One node's `vllm serve` with the DP flags dgxcluster passes (serving/dataparallel.py)."""
    p = Serve(root, tmp / f"{name}.log", [
        "--distributed-executor-backend", "mp", "--data-parallel-size", str(dp),
        "--data-parallel-address", "127.0.0.1", "--data-parallel-rpc-port", str(rpc),
        "--data-parallel-size-local", str(local), *extra], env)
    procs.append(p)
    return p


def test_the_head_serves_once_every_replica_joined(
        standin: Path, tmp_path: Path, started: list[Serve]) -> None:  # noqa: F811
    rpc, api = free_port(), free_port()
    head = node(started, standin, tmp_path, "head", rpc, "--host", "127.0.0.1",
                "--port", str(api))
    head.wait_for("Model loading took")  # its own engine is loaded, replica 1 is missing
    head.wait_for("Waiting for 0 local, 1 remote core engine proc(s) to start.")
    assert "Application startup complete." not in head.text
    other = node(started, standin, tmp_path, "other", rpc, "--data-parallel-start-rank", "1",
                 "--headless")
    head.wait_for("Application startup complete.")
    assert get(api, "/health")[0] == 200
    assert ("Launching 1 data parallel engine(s) in headless mode, with head node address "
            f"tcp://127.0.0.1:{rpc}.") in other.text
    assert "(EngineCore_DP1 pid=" in other.text  # its own world: DP rank 0 of an independent engine
    assert "rank 0 in world size 1 is assigned as DP rank 0," in other.text
    assert "Started DP Coordinator process (PID: " in head.text
    assert "Starting vLLM API server" not in other.text  # headless: the head's is the endpoint
    status, metrics = get(api, "/metrics")
    assert status == 200 and 'engine="0"' in metrics and 'engine="1"' in metrics
    head.proc.send_signal(signal.SIGTERM)
    assert head.exit_code() == 0
    other.wait_for("went away; like vLLM's headless engines, this node waits")
    other.proc.send_signal(signal.SIGTERM)
    assert other.exit_code() == 0


def test_a_replica_killed_while_loading_leaves_the_head_waiting(
        standin: Path, tmp_path: Path, started: list[Serve]) -> None:  # noqa: F811
    """Dense replicas are independent engines: the head waits for engine 1's READY without a
    timeout and watches only its own engines (dgxcluster's start sees the node's vLLM exit)."""
    rpc, api = free_port(), free_port()
    head = node(started, standin, tmp_path, "head", rpc, "--port", str(api))
    other = node(started, standin, tmp_path, "other", rpc, "--data-parallel-start-rank", "1",
                 "--headless", env={"DGXCLUSTER_STANDIN_LOAD_S": "60"})
    other.wait_for("Starting to load model org/m")
    other.proc.kill()
    head.wait_for("Waiting for 0 local, 1 remote core engine proc(s) to start.")
    assert head.proc.poll() is None and "Application startup complete." not in head.text


def test_a_served_head_keeps_serving_when_a_replica_dies(
        standin: Path, tmp_path: Path, started: list[Serve]) -> None:  # noqa: F811
    """Nothing tells the front end that a remote dense engine died: /health stays 200 and
    the requests it still routes there get no answer, while engine 0 answers."""
    rpc, api = free_port(), free_port()
    head = node(started, standin, tmp_path, "head", rpc, "--port", str(api))
    other = node(started, standin, tmp_path, "other", rpc, "--data-parallel-start-rank", "1",
                 "--headless")
    head.wait_for("Application startup complete.")
    other.proc.kill()
    other.exit_code()

    def complete() -> int | str:
        c = http.client.HTTPConnection("127.0.0.1", api, timeout=3)
        try:
            c.request("POST", "/v1/completions", body=json.dumps(
                {"model": "org/m", "prompt": "hi", "max_tokens": 2}),
                headers={"Content-Type": "application/json"})
            return c.getresponse().status
        except TimeoutError:
            return "no answer"
        finally:
            c.close()

    # the engines take turns; once the head's end of the link has closed, engine 1's turn hangs
    outcomes = [complete() for _ in range(2)]
    while "no answer" not in outcomes and len(outcomes) < 40:
        outcomes.append(complete())
    assert "no answer" in outcomes and complete() == 200  # engine 0 still answers
    assert get(api, "/health")[0] == 200
    assert head.proc.poll() is None


def test_an_engine_the_head_does_not_expect_is_refused(
        standin: Path, tmp_path: Path, started: list[Serve]) -> None:  # noqa: F811
    """Local sizes that do not add up: the head (DP 2, one local) hears from engine 2."""
    rpc = free_port()
    head = node(started, standin, tmp_path, "head", rpc, "--port", str(free_port()))
    node(started, standin, tmp_path, "other", rpc, "--data-parallel-start-rank", "2",
         "--headless")
    assert head.exit_code() == 1
    assert "RuntimeError: Message from engine with unexpected data parallel rank: 2" in head.text


def test_an_rpc_port_in_use_fails_the_head(
        standin: Path, tmp_path: Path, started: list[Serve]) -> None:  # noqa: F811
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        head = node(started, standin, tmp_path, "head", port, "--port", str(free_port()))
        assert head.exit_code() == 1
    assert (f"zmq.error.ZMQError: Address already in use (addr='tcp://127.0.0.1:{port}')"
            in head.text)


@pytest.mark.parametrize(("extra", "message"), [
    (["--data-parallel-start-rank", "1"], "without --headless is vLLM's hybrid load balancing"),
    (["--data-parallel-start-rank", "1", "--headless", "--data-parallel-hybrid-lb"],
     "ValueError: data_parallel_hybrid_lb is not applicable in headless mode"),
])
def test_what_vllm_refuses_before_an_engine_starts(
        standin: Path, tmp_path: Path, started: list[Serve], extra: list[str],  # noqa: F811
        message: str) -> None:
    p = node(started, standin, tmp_path, "n", free_port(), *extra)
    assert p.exit_code() == 1
    assert message in p.text
    assert "Starting to load model" not in p.text
