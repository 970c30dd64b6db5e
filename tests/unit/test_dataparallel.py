"""The per-node data-parallel flags the native executor will pass (issue 14 wires them in):
checked against vLLM's own argument tables and against what vLLM infers from them."""

from __future__ import annotations

import pytest

from dgxcluster.inventory import parse_inventory, placement
from dgxcluster.inventory.placement import Placement
from dgxcluster.nodeside import vllm_argparse
from dgxcluster.serving.dataparallel import dp_argv
from dgxcluster.vllmcli import snapshot
from tests.unit.test_topology import nodes


def place(n: int, tp: int, dp: int, gpus: int = 1) -> Placement:
    inv = parse_inventory(nodes(n) + f"ray: {{num_gpus: {gpus}}}\n", environ={})
    s = inv.serve.model_copy(update={"tensor_parallel_size": tp, "data_parallel_size": dp})
    return placement.place(inv.model_copy(update={"serve": s}))


def test_replicas_that_fit_a_node() -> None:
    """vLLM's documented two-node example: DP 4, two ranks per node."""
    out = dp_argv(place(2, tp=1, dp=4, gpus=2), "10.99.48.128", rpc_port=13345)
    assert list(out[0].argv) == ["--data-parallel-size", "4", "--data-parallel-address",
                                 "10.99.48.128", "--data-parallel-rpc-port", "13345",
                                 "--data-parallel-size-local", "2"]
    assert list(out[1].argv) == ["--data-parallel-size", "4", "--data-parallel-address",
                                 "10.99.48.128", "--data-parallel-rpc-port", "13345",
                                 "--data-parallel-size-local", "2",
                                 "--data-parallel-start-rank", "2", "--headless"]


def test_dgx_spark_tp2_dp2_on_four_nodes() -> None:
    """One GPU per Spark: each replica spans two nodes (vLLM's --nnodes mode)."""
    out = dp_argv(place(4, tp=2, dp=2), "10.0.0.1")
    assert [(d.node, d.node_rank, d.dp_start, d.dp_local, d.headless) for d in out] == [
        ("s1", 0, 0, 1, False), ("s2", 1, 0, 1, True), ("s3", 2, 1, 1, True),
        ("s4", 3, 1, 1, True)]
    assert "--nnodes" in out[2].argv and out[2].argv[out[2].argv.index("--node-rank") + 1] == "2"


@pytest.mark.parametrize(("n", "tp", "dp", "gpus"), [(2, 1, 4, 2), (4, 2, 2, 1), (3, 1, 3, 1),
                                                     (8, 2, 4, 1)])
def test_what_vllm_infers_matches(n: int, tp: int, dp: int, gpus: int) -> None:
    """vLLM's arg_utils: with --nnodes, data_parallel_rank = node_rank * local_world_size //
    (TP x PP) and nnodes_within_dp = nnodes // (DP // DP_local); our explicit start rank and
    local count must agree with it, and every replica's nodes with vLLM's grouping."""
    p = place(n, tp, dp, gpus)
    for d in dp_argv(p, "10.0.0.1"):
        a = list(d.argv)
        if "--nnodes" in a:
            world, within = dp * tp, tp
            local_world = world // n
            assert d.dp_start == d.node_rank * local_world // within
            nnodes_within = n // (dp // d.dp_local)
            assert p.replica_nodes(d.dp_start)[d.node_rank % nnodes_within] == d.node
        else:
            assert p.replica_nodes(d.dp_start)[0] == d.node


@pytest.mark.parametrize("version", snapshot.available())
def test_every_flag_parses_with_vllms_own_table(version: str) -> None:
    table = snapshot.load(version).table
    for p in (place(4, tp=2, dp=2), place(2, tp=1, dp=4, gpus=2)):
        for d in dp_argv(p, "10.0.0.1"):
            ns = vllm_argparse.parse_serve(table, ["some/model", *d.argv], raise_errors=True)
            assert ns.data_parallel_size == p.dp and ns.headless is d.headless
            assert ns.data_parallel_address == "10.0.0.1"
            assert ns.data_parallel_size_local == d.dp_local
            if d.headless:
                assert ns.data_parallel_start_rank == d.dp_start
