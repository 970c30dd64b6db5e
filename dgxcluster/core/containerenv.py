"""The environment every Ray/vLLM container gets, computed in one place from the inventory.

`start` passes it at `docker run` (variables given to `docker exec -e` never reach Ray's
workers), and `verify-ib` checks exactly this mapping against each node's real interfaces
and RDMA devices, so what is verified is what runs. Pure: no I/O.

Per node and per topology (`inventory.topology`):
- `NCCL_IB_HCA`: the node's own RDMA devices (its rails, or the ends of its cables).
- the socket/bootstrap variables (`IFNAME_VARS`): the node's first rail on a direct/switch
  fabric; on a ring or mesh the interface carrying fabric_ip (management, enP7s7 by default),
  because no fabric interface reaches every node there.
- on a ring or mesh, what NCCL needs across per-cable subnets (`RING_ENV`, sources in
  docs/DEVELOPING.md): subnet-aware routing (NCCL >= 2.30.7), no NIC merging (one port
  reaches one neighbour only), NCCL's internal IB transport (the IBext plugin has no
  subnet-aware routing), `NCCL_IB_SUBNET_PREFIX_LEN` when the links are not /24, and
  `NCCL_ALGO=Ring` on rings of four or more (other algorithms connect non-neighbours).

Precedence, lowest first: the values derived from `fabric` and the node, then
`fabric.nccl_env`, then `container.env` (an explicit setting always wins, and verify-ib
then says whether it is right).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dgxcluster.inventory import topology

if TYPE_CHECKING:
    from dgxcluster.inventory.schema import InventoryModel

#: The variables that carry the fabric interface name (NCCL bootstrap/sockets, Gloo, the
#: TensorPipe RPC agent, UCX, Open MPI's TCP transport).
IFNAME_VARS = ("NCCL_SOCKET_IFNAME", "GLOO_SOCKET_IFNAME", "TP_SOCKET_IFNAME",
               "UCX_NET_DEVICES", "OMPI_MCA_btl_tcp_if_include")
#: NCCL on per-cable subnets: NVIDIA's spark_cluster_setup.py (ring: NCCL_IB_MERGE_NICS=0,
#: NCCL_NET_PLUGIN=none; all: NCCL_IB_SUBNET_AWARE_ROUTING=1) and eugr's NETWORKING.md; each
#: checked in NCCL 2.30.7 (env.rst; src/transport/net_ib/connect.cc, init.cc).
RING_ENV = {"NCCL_IB_SUBNET_AWARE_ROUTING": "1", "NCCL_IB_MERGE_NICS": "0",
            "NCCL_NET_PLUGIN": "none"}
#: The smallest closed ring where NCCL's tree/other algorithms would pair non-neighbours.
RING_ALGO_FROM = 4


def fabric_env(inventory: InventoryModel, node_name: str) -> dict[str, str]:
    """What the topology alone asks for on `node_name` (before nccl_env and container.env)."""
    topo = topology.of(inventory)
    env: dict[str, str] = dict.fromkeys(IFNAME_VARS, topo.bootstrap_interface(node_name))
    hcas = topo.rdma_devices(node_name)
    if hcas:
        env["NCCL_IB_HCA"] = ",".join(hcas)
    if inventory.fabric.nccl_ib_gid_index is not None:
        env["NCCL_IB_GID_INDEX"] = str(inventory.fabric.nccl_ib_gid_index)
    if topo.point_to_point:
        env.update(RING_ENV)
        if topo.prefix_length != topology.NCCL_SUBNET_PREFIX_DEFAULT:
            env["NCCL_IB_SUBNET_PREFIX_LEN"] = str(topo.prefix_length)
        if topo.kind == "ring" and len(topo.nodes) >= RING_ALGO_FROM:
            env["NCCL_ALGO"] = "Ring"
    return env


def container_env(inventory: InventoryModel, node_name: str) -> dict[str, str]:
    """Environment for the container on `node_name` (KeyError if there is no such node)."""
    node = inventory.node(node_name)
    env = fabric_env(inventory, node_name)
    env["VLLM_HOST_IP"] = str(node.fabric_ip)
    env["MASTER_ADDR"] = str(inventory.head_node.fabric_ip)
    env["RAY_memory_monitor_refresh_ms"] = "0"
    env.update(inventory.fabric.nccl_env)
    env.update(inventory.container.env)
    return env
