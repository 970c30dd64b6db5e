"""Which nodes serve and which rank runs where: TP x PP (x DP) over the inventory's nodes, the
head first, no node left idle without being named."""

from __future__ import annotations

import pytest

from dgxcluster.errors import InventoryError
from dgxcluster.inventory import parse_inventory, placement
from dgxcluster.inventory.load import Inventory
from tests.unit.test_topology import nodes, ring


def load(text: str) -> Inventory:
    return parse_inventory(text, "inv.yaml", environ={})


def refused(text: str) -> str:
    with pytest.raises(InventoryError) as exc:
        load(text)
    return str(exc.value)


def test_tp2_pp2_on_four_nodes_head_first() -> None:
    inv = load(nodes(4) + "head: s3\nserve: {tensor_parallel_size: 2, pipeline_parallel_size: 2}\n")
    p = placement.place(inv)
    assert p.nodes == ("s3", "s1", "s2", "s4") and p.idle == ()
    assert [(r.rank, r.node, r.pp, r.tp) for r in p.ranks] == [
        (0, "s3", 0, 0), (1, "s1", 0, 1), (2, "s2", 1, 0), (3, "s4", 1, 1)]
    assert p.describe() == "TP 2 x PP 2 on s3, s1, s2, s4 (head s3)"


def test_nodes_left_idle_are_named() -> None:
    out = refused(nodes(4) + "serve: {tensor_parallel_size: 2}\n")
    assert ("inv.yaml:6: serve.tensor_parallel_size: tensor_parallel_size 2 x "
            "pipeline_parallel_size 1 = 2 GPUs fill 2 of the 4 nodes: s3, s4 would sit idle; "
            "list the nodes that serve in serve.nodes (head first)") in out


def test_serve_nodes_says_which_serve() -> None:
    inv = load(nodes(4) + "serve: {tensor_parallel_size: 2, nodes: [s4, s1]}\n")
    p = placement.place(inv)
    assert p.nodes == ("s1", "s4") and p.idle == ("s2", "s3")
    assert p.describe().endswith("; not serving: s2, s3")
    out = refused(nodes(4) + "serve: {tensor_parallel_size: 2, nodes: [s1, s2, s3]}\n")
    assert "serve.nodes: lists 3 nodes, but tensor_parallel_size 2 x pipeline_parallel_size 1 " \
           "= 2 GPUs fill 2: s3 would sit idle" in out


@pytest.mark.parametrize(("serve", "why"), [
    ("{nodes: [s1, s9]}", "serve.nodes[1]: names no node: 's9'"),
    ("{nodes: [s1, s1]}", "serve.nodes[1]: s1 is listed twice"),
    ("{nodes: [s2]}", "serve.nodes: must include the head s1"),
])
def test_bad_serve_nodes(serve: str, why: str) -> None:
    assert why in refused(nodes(2) + f"serve: {serve}\n")


def test_too_many_gpus_keeps_its_message() -> None:
    out = refused(nodes(2) + "serve: {tensor_parallel_size: 2, data_parallel_size: 2}\n")
    assert ("tensor_parallel_size 2 x pipeline_parallel_size 1 x data_parallel_size 2 needs 4 "
            "GPUs, but the 2 node(s) have 2 (1 each: one per DGX Spark") in out


def test_replicas_over_nodes_with_two_gpus_each() -> None:
    """Placement is modelled for DP now; launching replicas waits for the native executor."""
    text = nodes(2) + "ray: {num_gpus: 2}\nserve: {tensor_parallel_size: 1, data_parallel_size: 4}\n"
    assert "data-parallel needs serve.executor: native" in refused(text)
    inv = load(nodes(2) + "ray: {num_gpus: 2}\n")
    s = inv.serve.model_copy(update={"tensor_parallel_size": 1, "data_parallel_size": 4})
    p = placement.place(inv.model_copy(update={"serve": s}))
    assert [(r.dp, r.node, r.gpu) for r in p.ranks] == [(0, "s1", 0), (1, "s1", 1),
                                                         (2, "s2", 0), (3, "s2", 1)]
    assert p.replica_nodes(3) == ("s2",) and p.nodes_per_replica == 1


def test_a_replica_that_spans_nodes() -> None:
    inv = load(nodes(4))
    s = inv.serve.model_copy(update={"tensor_parallel_size": 2, "data_parallel_size": 2})
    p = placement.place(inv.model_copy(update={"serve": s}))
    assert p.nodes_per_replica == 2
    assert p.replica_nodes(0) == ("s1", "s2") and p.replica_nodes(1) == ("s3", "s4")


def test_replicas_must_fill_whole_nodes() -> None:
    out = refused(nodes(2) + "ray: {num_gpus: 2}\nserve: {tensor_parallel_size: 3}\n")
    assert "a replica of tensor_parallel_size x pipeline_parallel_size = 3 GPUs neither " \
           "fills whole nodes of 2 GPUs nor shares one evenly" in out


def test_three_node_ring_serves_pp3_with_ray() -> None:
    inv = load(ring(3) + "serve: {tensor_parallel_size: 1, pipeline_parallel_size: 3}\n")
    assert placement.place(inv).nodes == ("s1", "s2", "s3")


def test_four_node_ring_needs_cable_order_which_ray_cannot_keep() -> None:
    out = refused(ring(4) + "serve: {tensor_parallel_size: 4}\n")
    assert "4 nodes of a ring serve, but Ray places vLLM's workers itself" in out


def test_consecutive_ranks_must_share_a_cable() -> None:
    """Two nodes of a four-node ring that are not neighbours cannot be ranks 0 and 1."""
    out = refused(ring(4) + "serve: {tensor_parallel_size: 2, nodes: [s1, s3]}\n")
    assert "serve.nodes: s1 and s3 hold consecutive ranks but no cable joins them" in out
    inv = load(ring(4) + "serve: {tensor_parallel_size: 2, nodes: [s1, s4]}\n")
    assert placement.place(inv).nodes == ("s1", "s4")


def test_defaults_are_checked_by_start_not_at_load() -> None:
    inv = load(nodes(4))  # default TP 2 on four nodes: exec and build still work
    assert "s3, s4 would sit idle" in (placement.problem(inv) or "")
    assert inv.parallel_problem() == placement.problem(inv)
