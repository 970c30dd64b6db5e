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
