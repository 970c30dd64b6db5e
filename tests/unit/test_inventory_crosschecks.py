"""Caught at load, not on the nodes: jump hosts (syntax, loops), ports Ray and vLLM cannot all
bind, a TP x PP the cluster's GPUs cannot hold."""

from __future__ import annotations

from pathlib import Path

import pytest

from dgxcluster.core.session import Session
from dgxcluster.errors import InventoryError, UsageError
from dgxcluster.inventory import parse_inventory
from dgxcluster.inventory.jumps import JumpHop, parse_hop, parse_jump
from dgxcluster.serving.start import StartOptions, start
from tests.fakes import FakeConnection

NODES = """\
nodes:
  - {name: a, host: 10.0.0.1, fabric_ip: 192.0.2.1}
  - {name: b, host: 10.0.0.2, fabric_ip: 192.0.2.2}
"""


def problems(text: str) -> str:
    with pytest.raises(InventoryError) as exc:
        parse_inventory(text, "inv.yaml", environ={})
    return str(exc.value)


# -- jump hosts ------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "hops"), [
    ("bastion", (JumpHop("bastion"),)),
    ("jumper@bastion.example:2222", (JumpHop("bastion.example", "jumper", 2222),)),
    ("ssh://ops@10.0.0.9", (JumpHop("10.0.0.9", "ops"),)),
    ("a,root@b:22", (JumpHop("a"), JumpHop("b", "root", 22))),
    ("[fe80::1]:2200", (JumpHop("fe80::1", None, 2200),)),
    ("u@[2001:db8::2]", (JumpHop("2001:db8::2", "u"),)),
    ("none", ()),
    ("NONE", ()),
])
def test_proxyjump_syntax(text: str, hops: tuple[JumpHop, ...]) -> None:
    assert parse_jump(text) == hops


@pytest.mark.parametrize(("text", "why"), [
    ("a,,b", "empty hop"),
    ("a,", "empty hop"),
    ("host:99999", "port must be a number"),
    ("host:ssh", "port must be a number"),
    ("fe80::1", "in brackets"),
    ("[fe80::1", "without ']'"),
    ("-oProxyCommand=touch x", "not a hostname"),
    ("a b", "not a hostname"),
    ("h;rm", "not a hostname"),
    ("bad user@host", "not a valid user name"),
    ("a,b,c,d,e,f,g,h,i", "at most 8"),
])
def test_bad_proxyjump_is_refused(text: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        parse_jump(text)


def test_hop_prints_as_written() -> None:
    assert str(parse_hop("u@[fe80::1]:22")) == "u@[fe80::1]:22"
    assert str(parse_hop("bastion")) == "bastion"


def test_bad_jump_in_inventory_names_the_key_and_line() -> None:
    text = NODES.replace("fabric_ip: 192.0.2.2}", "fabric_ip: 192.0.2.2, jump: 'x;y'}")
    assert "inv.yaml:3: nodes[1].jump: 'x;y' is not a hostname" in problems(text)
    assert "inv.yaml:5: ssh.jump: empty hop" in problems(NODES + "ssh:\n  jump: 'a,'\n")


def test_ssh_jump_applies_to_every_node_and_a_node_in_the_chain_uses_the_hops_before_it() -> None:
    inv = parse_inventory(NODES + "ssh:\n  jump: 'bastion,a'\n", environ={})
    assert inv.jump_hops("b") == (JumpHop("bastion"), JumpHop("a"))
    assert inv.jump_hops("a") == (JumpHop("bastion"),)


def test_node_jump_overrides_ssh_jump_and_none_means_direct() -> None:
    text = NODES.replace("fabric_ip: 192.0.2.2}", "fabric_ip: 192.0.2.2, jump: none}")
    inv = parse_inventory(text + "ssh:\n  jump: bastion\n", environ={})
    assert inv.jump_hops("b") == ()
    assert inv.jump_hops("a") == (JumpHop("bastion"),)
    assert parse_inventory(NODES, environ={}).jump_hops("a") is None  # ~/.ssh/config decides


def test_jump_loops_and_self_jumps_are_refused() -> None:
    loop = (NODES.replace("192.0.2.1}", "192.0.2.1, jump: b}")
            .replace("192.0.2.2}", "192.0.2.2, jump: a}"))
    out = problems(loop)
    assert "nodes[0].jump: jump hosts form a loop: a -> b -> a" in out
    assert "nodes[1].jump: jump hosts form a loop: b -> a -> b" in out
    itself = NODES.replace("192.0.2.2}", "192.0.2.2, jump: 'bastion,b'}")
    assert "nodes[1].jump: b cannot be reached through itself (its jump hosts: bastion -> b)" \
        in problems(itself)


def test_a_chain_through_nodes_is_fine() -> None:
    text = (NODES.replace("192.0.2.1}", "192.0.2.1, jump: bastion}")
            .replace("192.0.2.2}", "192.0.2.2, jump: a}"))
    inv = parse_inventory(text, environ={})
    assert inv.jump_hops("b") == (JumpHop("a"),)


# -- ports -----------------------------------------------------------------------------------

@pytest.mark.parametrize(("section", "where", "other"), [
    ("ray:\n  port: 8000\n", "ray.port", "serve.port"),  # at the key the file sets
    ("ray:\n  port: 8000\nserve:\n  port: 8000\n", "serve.port", "ray.port"),
    ("serve:\n  port: 8265\n", "serve.port", "ray.dashboard_port"),
    ("ray:\n  dashboard_port: 6379\n", "ray.dashboard_port", "ray.port"),
])
def test_ports_the_head_binds_twice_are_refused(section: str, where: str, other: str) -> None:
    assert f"{where}: " in problems(NODES + section)
    assert f"is also {other}: Ray and vLLM share the head's network" in problems(NODES + section)


@pytest.mark.parametrize(("section", "key", "what"), [
    ("serve:\n  port: 10001\n", "serve.port", "Ray's client server"),
    ("serve:\n  port: 12000\n", "serve.port", "Ray's worker ports"),
    ("ray:\n  port: 19999\n", "ray.port", "Ray's worker ports"),
    ("ray:\n  dashboard_port: 52365\n", "ray.dashboard_port", "Ray's dashboard agent"),
])
def test_ports_ray_takes_by_default_are_refused(section: str, key: str, what: str) -> None:
    out = problems(NODES + section)
    assert f"inv.yaml:5: {key}: " in out and what in out


def test_ports_just_outside_rays_ranges_are_fine() -> None:
    parse_inventory(NODES + "serve:\n  port: 20000\nray:\n  port: 10000\n", environ={})


# -- TP x PP against the GPUs ----------------------------------------------------------------

def test_tp_times_pp_over_the_gpus_is_refused_at_load() -> None:
    out = problems(NODES + "serve:\n  tensor_parallel_size: 2\n  pipeline_parallel_size: 2\n")
    assert ("inv.yaml:5: serve.tensor_parallel_size: tensor_parallel_size 2 x "
            "pipeline_parallel_size 2 needs 4 GPUs, but the 2 node(s) have 2 (1 each: one per "
            "DGX Spark; set ray.num_gpus for another count)") in out


def test_ray_num_gpus_sets_the_count() -> None:
    ok = NODES + "serve:\n  tensor_parallel_size: 4\nray:\n  num_gpus: 2\n"
    assert parse_inventory(ok, environ={}).parallel_problem() is None
    out = problems(NODES + "serve:\n  tensor_parallel_size: 1\nray:\n  num_gpus: 0\n")
    assert "needs 1 GPUs, but the 2 node(s) have 0 (0 each: ray.num_gpus)" in out


def test_the_check_follows_environment_overrides() -> None:
    with pytest.raises(InventoryError, match="DGXCLUSTER_SERVE__PIPELINE_PARALLEL_SIZE"):
        parse_inventory(NODES, "inv.yaml",
                        environ={"DGXCLUSTER_SERVE__PIPELINE_PARALLEL_SIZE": "3"})


@pytest.mark.parametrize("dry_run", [False, True])
def test_the_default_tp_on_one_node_loads_and_start_refuses_it(tmp_path: Path,
                                                               dry_run: bool) -> None:
    """A one-node inventory with the default TP 2 still serves exec and build; `start` (and
    its --dry-run) refuses it as bad input before contacting any node."""
    one = "nodes:\n  - {name: a, host: 10.0.0.1, fabric_ip: 192.0.2.1}\nserve: {model: m}\n"
    inv = parse_inventory(one, environ={})
    fake = FakeConnection("a")
    session = Session.open(inv, factory=lambda spec: fake, environ={}, log_dir=tmp_path)
    with pytest.raises(UsageError, match=r"^serve.tensor_parallel_size: tensor_parallel_size 2 "
                       r"x pipeline_parallel_size 1 needs 2 GPUs, but the 1 node\(s\) have 1"):
        start(session, StartOptions(dry_run=dry_run))
    assert fake.calls == []


# -- the native executor: one rank per node, rank 0's master port -------------------------

THREE = NODES + "  - {name: c, host: 10.0.0.3, fabric_ip: 192.0.2.3}\n"


def test_native_ranks_are_the_serving_nodes_placement_decides() -> None:
    """The native executor is placed like Ray (inventory/placement.py): idle nodes must be left
    out through serve.nodes; the ranks, and `--nnodes`, are then the serving nodes only."""
    from dgxcluster.core.ranks import node_ranks
    from dgxcluster.inventory import placement
    from dgxcluster.serving import plan

    out = problems(THREE + "serve:\n  executor: native\n")  # TP 2 on 3 nodes
    assert ("serve.tensor_parallel_size: tensor_parallel_size 2 x pipeline_parallel_size 1 = 2 "
            "GPUs fill 2 of the 3 nodes: c would sit idle") in out
    out = problems(NODES + "serve:\n  executor: native\n  tensor_parallel_size: 4\n")
    assert "serve.tensor_parallel_size: tensor_parallel_size 4 x pipeline_parallel_size 1 needs " \
        "4 GPUs, but the 2 node(s) have 2" in out
    ok = parse_inventory(NODES + "serve:\n  executor: native\n  tensor_parallel_size: 4\n"
                         "ray:\n  num_gpus: 2\n", environ={})
    assert ok.parallel_problem() is None and placement.native_problem(ok) is None
    two = parse_inventory(THREE + "serve:\n  executor: native\n  nodes: [a, c]\n", environ={})
    assert two.parallel_problem() is None
    assert node_ranks(two) == {"a": 0, "c": 1}
    flags = plan.executor_flags(two, "c")
    assert flags[flags.index("--nnodes") + 1] == "2" and flags[flags.index("--node-rank") + 1] == "1"
    assert "--headless" in flags


def test_data_parallel_needs_the_native_executor_and_its_own_port() -> None:
    from dgxcluster.inventory import placement

    ok = parse_inventory(NODES + "serve:\n  executor: native\n  tensor_parallel_size: 1\n"
                         "  data_parallel_size: 2\n", environ={})
    assert ok.parallel_problem() is None and placement.native_problem(ok) is None
    out = problems(NODES + "serve:\n  tensor_parallel_size: 1\n  data_parallel_size: 2\n")
    assert "serve.data_parallel_size: data-parallel needs serve.executor: native" in out
    out = problems(NODES + "serve:\n  executor: native\n  tensor_parallel_size: 1\n"
                   "  data_parallel_size: 2\n  data_parallel_rpc_port: 8000\n")
    assert "serve.data_parallel_rpc_port: 8000 is also serve.port" in out
    out = problems(NODES + "serve:\n  executor: native\n  tensor_parallel_size: 1\n"
                   "  data_parallel_size: 3\n")
    assert "data_parallel_size 3 needs 3 GPUs, but the 2 node(s) have 2" in out


def test_native_takes_the_restart_watcher_from_the_inventory_and_from_executor(
        tmp_path: Path) -> None:
    """A watcher per node heals native ranks (issue 17): nothing refuses the pair."""
    from dgxcluster.inventory.load import load_inventory, with_executor

    ok = parse_inventory(NODES + "serve:\n  executor: native\n  restart: on-failure\n", environ={})
    assert (ok.serve.executor, ok.serve.restart) == ("native", "on-failure")
    path = tmp_path / "inv.yaml"
    path.write_text(NODES + "serve: {model: m, restart: on-failure}\n")
    inv = with_executor(load_inventory(path, environ={}), "native")
    assert (inv.serve.executor, inv.serve.restart) == ("native", "on-failure")


def test_native_master_port_may_not_be_the_api_port() -> None:
    out = problems(NODES + "serve:\n  executor: native\n  master_port: 8000\n")
    assert "serve.master_port: 8000 is also serve.port" in out
    # with Ray, rank 0's master port is not used: no clash to report
    parse_inventory(NODES + "serve:\n  master_port: 8000\n", environ={})


def test_start_executor_override_is_checked_like_the_file(tmp_path: Path) -> None:
    from dgxcluster.inventory.load import load_inventory, with_executor

    path = tmp_path / "inv.yaml"
    path.write_text(THREE + "serve: {model: m}\n")
    inv = load_inventory(path, environ={})
    with pytest.raises(UsageError, match=r"^--executor: native: tensor_parallel_size 2 x "
                       r"pipeline_parallel_size 1 = 2 GPUs fill 2 of the 3 nodes"):
        with_executor(inv, "native")
    path.write_text(NODES + "serve: {model: m}\n")
    two = load_inventory(path, environ={})
    native = with_executor(two, "native")
    assert native.serve.executor == "native" and native.source == two.source
    assert with_executor(native, "ray").serve.executor == "ray"
