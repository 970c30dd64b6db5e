"""The environment every Ray/vLLM container gets, computed in one place from the inventory.

`start` passes it at `docker run` (variables given to `docker exec -e` never reach Ray's
workers), and `verify-ib` checks exactly this mapping against each node's real interfaces
and RDMA devices, so what is verified is what runs. Pure: no I/O.

Precedence, lowest first: the values derived from `fabric` and the node, then
`fabric.nccl_env`, then `container.env` (an explicit setting always wins, and verify-ib
then says whether it is right).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dgxcluster.inventory.schema import InventoryModel

#: The variables that carry the fabric interface name (NCCL bootstrap/sockets, Gloo, the
#: TensorPipe RPC agent, UCX, Open MPI's TCP transport).
IFNAME_VARS = ("NCCL_SOCKET_IFNAME", "GLOO_SOCKET_IFNAME", "TP_SOCKET_IFNAME",
               "UCX_NET_DEVICES", "OMPI_MCA_btl_tcp_if_include")


def container_env(inventory: InventoryModel, node_name: str) -> dict[str, str]:
    """Environment for the container on `node_name` (KeyError if there is no such node)."""
    node = inventory.node(node_name)
    fabric = inventory.fabric
    iface = fabric.rails[0].interface
    env: dict[str, str] = dict.fromkeys(IFNAME_VARS, iface)
    if fabric.rdma_devices:
        env["NCCL_IB_HCA"] = ",".join(fabric.rdma_devices)
    if fabric.nccl_ib_gid_index is not None:
        env["NCCL_IB_GID_INDEX"] = str(fabric.nccl_ib_gid_index)
    env["VLLM_HOST_IP"] = str(node.fabric_ip)
    env["MASTER_ADDR"] = str(inventory.head_node.fabric_ip)
    env["RAY_memory_monitor_refresh_ms"] = "0"
    env.update(fabric.nccl_env)
    env.update(inventory.container.env)
    return env
