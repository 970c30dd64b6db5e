"""The environment every Ray container gets at `docker run` (never `docker exec -e`, which
does not reach Ray's worker processes).

Pure: computed from the inventory alone. Socket-based libraries (NCCL bootstrap, Gloo,
TensorPipe, UCX, Open MPI) are pinned to the fabric interface; NCCL's RDMA path gets both
CX-7 twins (one twin alone caps bandwidth at about half); Ray and vLLM are told the node's
fabric address so neither picks the management or a link-local address.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dgxcluster.inventory.model import InventoryModel


def container_env(inventory: InventoryModel, node_name: str) -> dict[str, str]:
    """Variables for `node_name`'s container, in a stable order (later sources override)."""
    node = inventory.node(node_name)
    fabric = inventory.fabric
    iface = fabric.rails[0].interface
    env: dict[str, str] = {
        "NCCL_SOCKET_IFNAME": iface,
        "GLOO_SOCKET_IFNAME": iface,
        "TP_SOCKET_IFNAME": iface,
        "UCX_NET_DEVICES": iface,
        "OMPI_MCA_btl_tcp_if_include": iface,
    }
    if fabric.rdma_devices:
        env["NCCL_IB_HCA"] = ",".join(fabric.rdma_devices)
    if fabric.nccl_ib_gid_index is not None:
        env["NCCL_IB_GID_INDEX"] = str(fabric.nccl_ib_gid_index)
    env["VLLM_HOST_IP"] = str(node.fabric_ip)
    env["RAY_memory_monitor_refresh_ms"] = "0"
    env["MASTER_ADDR"] = str(inventory.head_node.fabric_ip)
    env.update(fabric.nccl_env)
    env.update(inventory.container.env)
    return env
