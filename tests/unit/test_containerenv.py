"""The one environment every container gets, and its precedence."""

from __future__ import annotations

import inspect

import pytest

from dgxcluster.core.containerenv import container_env
from dgxcluster.inventory import parse_inventory

TWO = """\
nodes:
  - {name: spark1, host: s1, fabric_ip: 192.168.100.10, rail_ips: [192.168.100.10, 192.168.101.10]}
  - {name: spark2, host: s2, fabric_ip: 192.168.100.11, rail_ips: [192.168.100.11, 192.168.101.11]}
"""


def test_spark_defaults_per_node() -> None:
    inv = parse_inventory(TWO, environ={})
    env = container_env(inv, "spark2")
    assert env == {
        "NCCL_SOCKET_IFNAME": "enp1s0f1np1",
        "GLOO_SOCKET_IFNAME": "enp1s0f1np1",
        "TP_SOCKET_IFNAME": "enp1s0f1np1",
        "UCX_NET_DEVICES": "enp1s0f1np1",
        "OMPI_MCA_btl_tcp_if_include": "enp1s0f1np1",
        "NCCL_IB_HCA": "rocep1s0f1,roceP2p1s0f1",
        "NCCL_IB_GID_INDEX": "3",
        "VLLM_HOST_IP": "192.168.100.11",
        "MASTER_ADDR": "192.168.100.10",
        "RAY_memory_monitor_refresh_ms": "0",
    }
    assert container_env(inv, "spark1")["VLLM_HOST_IP"] == "192.168.100.10"


def test_precedence_nccl_env_then_container_env() -> None:
    inv = parse_inventory(TWO + """\
fabric:
  nccl_ib_gid_index: null
  nccl_env: {NCCL_IB_HCA: rocep1s0f1, NCCL_NET_PLUGIN: none}
container:
  env: {NCCL_NET_PLUGIN: other, EXTRA: "1"}
""", environ={})
    env = container_env(inv, "spark1")
    assert env["NCCL_IB_HCA"] == "rocep1s0f1"
    assert env["NCCL_NET_PLUGIN"] == "other" and env["EXTRA"] == "1"
    assert "NCCL_IB_GID_INDEX" not in env


def test_rails_without_rdma_devices_leave_nccl_ib_hca_unset() -> None:
    inv = parse_inventory(TWO.replace(", rail_ips: [192.168.100.10, 192.168.101.10]", "")
                          .replace(", rail_ips: [192.168.100.11, 192.168.101.11]", "")
                          + "fabric:\n  rails: [{interface: eth5}]\n", environ={})
    env = container_env(inv, "spark1")
    assert "NCCL_IB_HCA" not in env and env["NCCL_SOCKET_IFNAME"] == "eth5"


def test_signature_is_the_shared_contract() -> None:
    sig = inspect.signature(container_env)
    assert list(sig.parameters) == ["inventory", "node_name"]
    with pytest.raises(KeyError):
        container_env(parse_inventory(TWO, environ={}), "nope")


def test_each_node_gets_its_own_rails_asymmetric_cabling() -> None:
    from pathlib import Path

    from dgxcluster.inventory import load_inventory

    inv = load_inventory(Path(__file__).resolve().parents[2] / "inventory" /
                         "example-asymmetric.yaml", environ={})
    one, two = container_env(inv, "spark1"), container_env(inv, "spark2")
    assert one["NCCL_IB_HCA"] == "rocep1s0f1,roceP2p1s0f1"
    assert two["NCCL_IB_HCA"] == "rocep1s0f0,roceP2p1s0f0"
    assert two["NCCL_SOCKET_IFNAME"] == "enp1s0f0np0" and one["NCCL_SOCKET_IFNAME"] == "enp1s0f1np1"
    assert "NCCL_IB_SUBNET_AWARE_ROUTING" not in one  # one subnet per rail: nothing to route


def test_ring_and_mesh_get_what_nccl_needs_across_per_cable_subnets() -> None:
    from tests.unit.test_topology import ring

    inv = parse_inventory(ring(3), environ={})
    env = container_env(inv, "s2")
    assert env["NCCL_IB_HCA"] == "rocep1s0f1,roceP2p1s0f1,rocep1s0f0,roceP2p1s0f0"
    assert env["NCCL_SOCKET_IFNAME"] == env["GLOO_SOCKET_IFNAME"] == "enP7s7"
    assert env["VLLM_HOST_IP"] == "10.0.0.2" and env["MASTER_ADDR"] == "10.0.0.1"
    assert (env["NCCL_IB_SUBNET_AWARE_ROUTING"], env["NCCL_IB_MERGE_NICS"],
            env["NCCL_NET_PLUGIN"]) == ("1", "0", "none")
    assert "NCCL_ALGO" not in env and "NCCL_IB_SUBNET_PREFIX_LEN" not in env
    four = container_env(parse_inventory(ring(4), environ={}), "s1")
    assert four["NCCL_ALGO"] == "Ring"  # a closed ring of 4+: other algorithms pair non-neighbours
    narrow = parse_inventory(ring(3).replace("/24", "/28"), environ={})
    assert container_env(narrow, "s1")["NCCL_IB_SUBNET_PREFIX_LEN"] == "28"
    mine = parse_inventory(ring(3) + "  nccl_env: {NCCL_IB_MERGE_NICS: '1'}\n", environ={})
    assert container_env(mine, "s1")["NCCL_IB_MERGE_NICS"] == "1"  # an explicit setting wins
