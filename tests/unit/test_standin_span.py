"""The vLLM stand-in as the nodes of data-parallel replicas that span nodes (TP 2 x DP 2 on
four one-GPU nodes), run here as real processes over loopback with the flags dgxcluster
passes (serving/dataparallel.py): each replica's leader forms its process group with its
follower, joins the head's handshake, and the head serves once both replicas are ready; what
vLLM refuses is refused in its words (vllm/engine/arg_utils.py, vllm/config/parallel.py).
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from tests.unit.test_standin_dp import node, started  # noqa: F401 - the fixture
from tests.unit.test_standin_native import Serve, free_port, get
from tests.unit.test_vllm_standin_cli import standin  # noqa: F401 - the staged stand-in

pytestmark = pytest.mark.timeout(120)


def leader(procs: list[Serve], root: Path, tmp: Path, name: str, rpc: int, rank: int,
           master: str, port: int, *extra: str, nnodes: int = 2) -> Serve:
    """A replica's leader as the testbed's vLLM (0.20.1) needs it: up to 0.27 a dense engine
    keeps --nnodes/--node-rank, so they are its replica's (dataparallel.py)."""
    return node(procs, root, tmp, name, rpc, "-tp", "2", "--nnodes", str(nnodes), "--node-rank",
                str(rank), "--master-addr", master, "--master-port", str(port), *extra)


def follower(procs: list[Serve], root: Path, tmp: Path, name: str, master: str,
             port: int) -> Serve:
    p = Serve(root, tmp / f"{name}.log", [
        "-tp", "2", "--distributed-executor-backend", "mp", "--nnodes", "2", "--node-rank", "1",
        "--master-addr", master, "--master-port", str(port), "--headless"])
    procs.append(p)
    return p


def test_two_replicas_of_two_nodes_each_serve_behind_the_head(
        standin: Path, tmp_path: Path, started: list[Serve]) -> None:  # noqa: F811
    """Each replica its own group at its leader (two loopback addresses, two ports: on a
    cluster the leaders are two hosts); the head waits for replica 1's leader, which waits
    for its follower."""
    rpc, api, p0, p1 = free_port(), free_port(), free_port(), free_port()
    head = leader(started, standin, tmp_path, "n1", rpc, 0, "127.0.0.1", p0,
                  "--host", "127.0.0.1", "--port", str(api))
    f0 = follower(started, standin, tmp_path, "n2", "127.0.0.1", p0)
    head.wait_for("Model loading took")
    lead1 = leader(started, standin, tmp_path, "n3", rpc, 0, "127.0.0.2", p1,
                   "--data-parallel-start-rank", "1", "--headless")
    lead1.wait_for("DP group leader: node_rank=0, node_rank_within_dp=0, master_addr=127.0.0.2")
    assert "Model loading took" not in lead1.text  # its follower is not there yet
    assert "Application startup complete." not in head.text
    f1 = follower(started, standin, tmp_path, "n4", "127.0.0.2", p1)
    head.wait_for("Application startup complete.")
    assert get(api, "/health")[0] == 200
    assert "Inferred data_parallel_rank 1 from node_rank 0" in lead1.text
    assert "Launching 1 data parallel engine(s) in headless mode" in lead1.text
    for f, port in ((f0, p0), (f1, p1)):
        assert ("Launching vLLM (v0.20.1) headless multiproc executor, with head node "
                f"address 127.0.0.{1 if f is f0 else 2}:{port}") in f.text
        assert "rank 1 in world size 2 is assigned as DP rank 0, PP rank 0, PCP rank 0, TP rank 1" \
            in f.text
    status, metrics = get(api, "/metrics")
    assert status == 200 and 'engine="0"' in metrics and 'engine="1"' in metrics
    f1.proc.kill()  # replica 1's follower: its leader's engine dies, and that node's vLLM
    assert lead1.exit_code() == 1
    assert "EngineCore encountered a fatal error." in lead1.text
    assert get(api, "/health")[0] == 200  # dense replicas: the head does not notice
    f0.proc.kill()  # the head's own replica: its engine fails at the next liveness check
    assert head.exit_code() == 1 or get(api, "/health")[0] != 200
    for p in (head, f0, lead1, f1):
        if p.proc.poll() is None:
            p.proc.send_signal(signal.SIGTERM)


@pytest.mark.parametrize(("rank", "extra", "nnodes", "message"), [
    (0, [], 3, "AssertionError: world_size=4 must be divisible by nnodes=3."),
    (4, ["--data-parallel-start-rank", "1", "--headless"], 4,
     "AssertionError: node_rank=4 must be less than nnodes=4."),
    (3, ["--data-parallel-start-rank", "1", "--headless"], 4,
     "is a follower in its replica (node_rank_within_dp 1) but has data-parallel flags"),
    # vLLM 0.20.1 keeps --nnodes 4 on the dense engine: a world of 2 over 4 nodes
    (0, [], 4, "AssertionError: global world_size (2) must be divisible by nnodes_within_dp (4)."),
])
def test_what_vllm_refuses_with_nnodes_and_data_parallel(
        standin: Path, tmp_path: Path, started: list[Serve], rank: int,  # noqa: F811
        extra: list[str], nnodes: int, message: str) -> None:
    p = leader(started, standin, tmp_path, "n", free_port(), rank, "127.0.0.1", free_port(),
               *extra, nnodes=nnodes)
    assert p.exit_code() == 1
    assert message in p.text
    assert "Starting to load model" not in p.text


def test_a_leader_whose_master_addr_is_another_host_is_refused(
        standin: Path, tmp_path: Path, started: list[Serve]) -> None:  # noqa: F811
    """Every replica at the head's address would share one TCP store (vLLM PR 39405)."""
    p = leader(started, standin, tmp_path, "n1", free_port(), 0, "192.0.2.1", free_port(),
               "--host", "127.0.0.1", "--port", str(free_port()))
    assert p.exit_code() == 1
    assert "--master-addr 192.0.2.1 is another host" in p.text
