"""The per-node data-parallel flags the native executor passes: checked against vLLM's own
argument tables and against what vLLM infers from them, and as each node's `vllm serve`."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from dgxcluster.core.ranks import layout, node_ranks, replicas
from dgxcluster.inventory import parse_inventory, placement
from dgxcluster.inventory.placement import Placement
from dgxcluster.nodeside import vllm_argparse
from dgxcluster.serving import dataparallel, plan
from dgxcluster.serving.dataparallel import dp_argv
from dgxcluster.vllmcli import snapshot
from tests.unit.test_topology import nodes

if TYPE_CHECKING:
    from dgxcluster.inventory.schema import InventoryModel


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


ADDR = {"s1": "10.0.0.1", "s2": "10.0.0.2", "s3": "10.0.0.3", "s4": "10.0.0.4"}
DP = "--data-parallel-size 2 --data-parallel-address 10.0.0.1 --data-parallel-rpc-port 29550"


def test_dgx_spark_tp2_dp2_on_four_nodes() -> None:
    """One GPU per Spark: each replica spans two nodes. A replica's leader runs its engine
    (DP flags, its own address as --master-addr), its follower only the replica's workers."""
    out = dp_argv(place(4, tp=2, dp=2), "10.0.0.1", addresses=ADDR, vllm_version="0.31.0")
    assert [(d.node, d.node_rank, d.dp_start, d.dp_local, d.headless) for d in out] == [
        ("s1", 0, 0, 1, False), ("s2", 1, 0, 1, True), ("s3", 2, 1, 1, True),
        ("s4", 3, 1, 1, True)]
    assert [" ".join(d.argv) for d in out] == [
        f"{DP} --data-parallel-size-local 1 --nnodes 4 --node-rank 0 --master-addr 10.0.0.1 "
        "--master-port 29501",
        "--nnodes 2 --node-rank 1 --master-addr 10.0.0.1 --master-port 29501 --headless",
        f"{DP} --data-parallel-size-local 1 --nnodes 4 --node-rank 2 --master-addr 10.0.0.3 "
        "--master-port 29501 --data-parallel-start-rank 1 --headless",
        "--nnodes 2 --node-rank 1 --master-addr 10.0.0.3 --master-port 29501 --headless"]


@pytest.mark.parametrize(("version", "rescoped"), [
    ("0.20.1", False), ("0.27.1", False), ("0.28.0", True), ("0.31.0", True), ("0.33.0", True),
    (None, True)])
def test_a_leader_says_the_nodes_its_release_expects(version: str | None,
                                                     rescoped: bool) -> None:
    """Up to vLLM 0.27 a dense engine keeps --nnodes/--node-rank (its replica's, then); from
    0.28 it re-scopes them (reconfigure_for_independent_dp_rank), so it gets the cluster's."""
    out = dp_argv(place(4, tp=2, dp=2), "10.0.0.1", addresses=ADDR, vllm_version=version)
    lead = " ".join(out[2].argv)
    assert ("--nnodes 4 --node-rank 2" in lead) is rescoped
    assert ("--nnodes 2 --node-rank 0" in lead) is not rescoped
    assert out[3].argv == out[3].argv  # a follower's flags do not depend on the release
    assert " ".join(out[3].argv).startswith("--nnodes 2 --node-rank 1 --master-addr 10.0.0.3")


def _flag(argv: tuple[str, ...], name: str) -> str:
    return argv[argv.index(name) + 1]


@pytest.mark.parametrize(("n", "tp", "dp", "gpus"), [(2, 1, 4, 2), (4, 2, 2, 1), (3, 1, 3, 1),
                                                     (8, 2, 4, 1), (6, 3, 2, 1)])
@pytest.mark.parametrize("version", ["0.20.1", "0.31.0"])
def test_what_vllm_infers_matches(n: int, tp: int, dp: int, gpus: int, version: str) -> None:
    """vLLM's arg_utils: with --nnodes, data_parallel_rank = node_rank * local_world_size //
    (TP x PP) and nnodes_within_dp = nnodes // (DP // DP_local); our explicit start rank must
    agree with it, the leader must stay a leader (node_rank_within_dp 0) before and after its
    dense engine's reset, and a follower's TP-only flags must place it in its leader's group."""
    p = place(n, tp, dp, gpus)
    span = p.nodes_per_replica
    addresses = {node: f"10.0.0.{i + 1}" for i, node in enumerate(p.nodes)}
    for d in dp_argv(p, "10.0.0.1", addresses=addresses, vllm_version=version):
        a = d.argv
        if "--nnodes" not in a:
            assert p.replica_nodes(d.dp_start)[0] == d.node
            continue
        nnodes, rank = int(_flag(a, "--nnodes")), int(_flag(a, "--node-rank"))
        assert _flag(a, "--master-addr") == addresses[p.replica_nodes(d.dp_start)[0]]
        if "--data-parallel-size" not in a:  # a follower: the TP-only multi-node flags
            assert (nnodes, rank) == (span, d.node_rank % span)
            assert p.replica_nodes(d.dp_start)[rank] == d.node
            continue
        world = dp * tp
        inferred = rank * (world // nnodes) // tp
        # arg_utils: data_parallel_rank = --data-parallel-start-rank, else the inferred one
        assert d.dp_start == (int(_flag(a, "--data-parallel-start-rank"))
                              if "--data-parallel-start-rank" in a else inferred)
        if version == "0.31.0":  # the cluster's node rank: inference agrees
            assert d.dp_start == inferred
        within = nnodes // dp  # DP_local is 1
        if within == 0:  # up to 0.27, more replicas than a replica's nodes: vLLM cannot
            assert version == "0.20.1" and dp > span  # (ZeroDivisionError; README says so)
            continue
        assert rank % within == 0
        after = (within, rank % within) if version == "0.31.0" else (nnodes, rank)
        assert after == (span, 0)  # the engine's group: its replica's nodes, itself first


@pytest.mark.parametrize("version", snapshot.available())
def test_every_flag_parses_with_vllms_own_table(version: str) -> None:
    table = snapshot.load(version).table
    for p in (place(4, tp=2, dp=2), place(2, tp=1, dp=4, gpus=2)):
        for d in dp_argv(p, "10.0.0.1", addresses=ADDR, vllm_version=version):
            ns = vllm_argparse.parse_serve(table, ["some/model", *d.argv], raise_errors=True)
            assert ns.headless is d.headless
            if "--data-parallel-size" not in d.argv:  # a spanning replica's follower
                assert ns.data_parallel_size == 1 and ns.nnodes == 2 and ns.node_rank == 1
                continue
            assert ns.data_parallel_size == p.dp
            assert ns.data_parallel_address == "10.0.0.1"
            assert ns.data_parallel_size_local == d.dp_local
            if d.headless:
                assert ns.data_parallel_start_rank == d.dp_start


def inventory(n: int, tp: int, dp: int) -> InventoryModel:
    return parse_inventory(nodes(n) + f"serve: {{model: org/m, executor: native, "
                           f"tensor_parallel_size: {tp}, data_parallel_size: {dp}}}\n", environ={})


def flags(inv: InventoryModel, node: str) -> str:
    """The part of the node's `vllm serve` after the sizes, up to --host."""
    argv = plan.serve_command(inv, node)
    return " ".join(argv[argv.index("--distributed-executor-backend"):argv.index("--host")])


def test_tp1_dp2_on_two_nodes_each_node_one_replica() -> None:
    inv = inventory(2, tp=1, dp=2)
    common = ("--distributed-executor-backend mp --data-parallel-size 2 --data-parallel-address "
              "192.168.100.1 --data-parallel-rpc-port 29550 --data-parallel-size-local 1")
    assert flags(inv, "s1") == common
    assert flags(inv, "s2") == f"{common} --data-parallel-start-rank 1 --headless"
    assert plan.head_ports(inv) == {
        8000: "vLLM's API (serve.port)", 29550: "vLLM's --data-parallel-rpc-port, where the "
        "replicas join the head (serve.data_parallel_rpc_port)"}


def test_tp2_dp2_on_four_nodes_replicas_span_two_nodes_each() -> None:
    """The DP flags carry --nnodes/--node-rank/--master-*, in place of the TP-only ones (not
    twice); a follower gets the TP-only ones at its leader; the head's master port is checked
    too. The image's release is unknown here (no Dockerfile beside this inventory): the
    leaders get the newer form."""
    inv = inventory(4, tp=2, dp=2)
    for k, node in enumerate(("s1", "s2", "s3", "s4")):
        argv = plan.serve_command(inv, node)
        assert argv.count("--nnodes") == 1 and argv.count("--master-port") == 1
        got = flags(inv, node)
        leader = f"192.168.100.{1 + k // 2 * 2}"
        if k % 2:
            assert got == (f"--distributed-executor-backend mp --nnodes 2 --node-rank 1 "
                           f"--master-addr {leader} --master-port 29501 --headless")
            continue
        assert (f"--data-parallel-size-local 1 --nnodes 4 --node-rank {k} --master-addr "
                f"{leader} --master-port 29501") in got
        assert got.endswith("--headless") is (k > 0)
        if k:
            assert f"--data-parallel-start-rank {k // 2} --headless" in got
    assert set(plan.head_ports(inv)) == {8000, 29501, 29550}


def test_tp1_dp3_on_three_nodes() -> None:
    inv = inventory(3, tp=1, dp=3)
    assert ["--data-parallel-start-rank 1" in flags(inv, "s2"),
            "--data-parallel-start-rank 2" in flags(inv, "s3")] == [True, True]
    assert "--data-parallel-size 3 " in flags(inv, "s1") and "--headless" not in flags(inv, "s1")
    assert node_ranks(inv) == {"s1": 0, "s2": 1, "s3": 2}
    assert replicas(inv) == {"s1": "0", "s2": "1", "s3": "2"} and layout(inv) == "DP 3 x TP 1"


def test_status_shows_replicas_per_node() -> None:
    inv = parse_inventory(nodes(2) + "ray: {num_gpus: 2}\nserve: {model: org/m, executor: native, "
                          "tensor_parallel_size: 1, data_parallel_size: 4}\n", environ={})
    assert replicas(inv) == {"s1": "0-1", "s2": "2-3"}
    assert replicas(inventory(4, tp=2, dp=2)) == {"s1": "0", "s2": "0", "s3": "1", "s4": "1"}
    assert layout(inventory(2, tp=2, dp=1)) == "TP 2" and replicas(inventory(2, tp=2, dp=1)) == {}


def test_the_rpc_port_enters_the_config_hash_only_with_data_parallel() -> None:
    """A running cluster without data parallel keeps its hash (no restart) now the key exists."""
    tp = inventory(2, tp=2, dp=1)
    moved = tp.model_copy(update={"serve": tp.serve.model_copy(update={"data_parallel_rpc_port": 1})})
    assert plan.config_hash(tp, "img") == plan.config_hash(moved, "img")
    dp = inventory(2, tp=1, dp=2)
    moved = dp.model_copy(update={"serve": dp.serve.model_copy(update={"data_parallel_rpc_port": 1})})
    assert plan.config_hash(dp, "img") != plan.config_hash(moved, "img")


def test_spanning_replica_leaders_bind_the_master_port_and_only_they_are_checked() -> None:
    """TP 2 x DP 2 on 4 nodes: s3 leads replica 1 and binds --master-port on its own host, so
    preflight checks it there; the followers s2 and s4 bind nothing of their own."""
    inv = inventory(4, tp=2, dp=2)
    assert [dataparallel.leader_of(inv, n) for n in ("s1", "s2", "s3", "s4")] == [
        "s1", "s1", "s3", "s3"]
    assert set(plan.node_ports(inv, "s1")) == {8000, 29501, 29550}
    assert list(plan.node_ports(inv, "s3")) == [29501]
    assert plan.node_ports(inv, "s2") == {} and plan.node_ports(inv, "s4") == {}
    one_per_node = inventory(2, tp=1, dp=2)
    assert dataparallel.leader_of(one_per_node, "s2") is None
    assert plan.node_ports(one_per_node, "s2") == {}


def test_at_boot_a_follower_waits_for_its_own_replica_leader() -> None:
    """serve.persist: s4 waits for s3's store (not the head's), s3 for the head's front end,
    s2 for the head's store."""
    from dgxcluster.core.nodepaths import NodePaths
    from dgxcluster.serving.persist import boot_plan

    inv = inventory(4, tp=2, dp=2)
    paths = NodePaths("/home/u", inv.state_dir, inv.cluster)
    waits = {n: boot_plan(inv, n, paths, "cfg")["steps"][0].get("wait_tcp")  # type: ignore[index]
             for n in ("s2", "s3", "s4")}
    assert waits == {"s2": ["192.168.100.1", 29501], "s3": ["192.168.100.1", 29550],
                     "s4": ["192.168.100.3", 29501]}
