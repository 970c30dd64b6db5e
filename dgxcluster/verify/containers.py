"""`docker run` lines for verify-ib's short-lived measurement containers.

They run the cluster's own image with the same options and environment the Ray containers
get (`container` settings + `container_env`), so a measurement inside them says what NCCL in
the real containers will see: a missing /dev/infiniband shows up here as a socket fallback.
"""

from __future__ import annotations

from dgxcluster.core.containerenv import container_env
from dgxcluster.core.naming import LABEL_CLUSTER, LABEL_ROLE, MOVING_TAG
from dgxcluster.inventory.schema import InventoryModel
from dgxcluster.remote.command import shell

ROLE = "verify"


def image_ref(inv: InventoryModel) -> str:
    """The image `build` made last: `<image.name>:current` (content tags are `ctx-<hex>`)."""
    return f"{inv.image.name}:{MOVING_TAG}"


def container_name(inv: InventoryModel, what: str) -> str:
    return f"dgxc-{inv.cluster}-verify-{what}"


def docker_run(inv: InventoryModel, node: str, name: str, entrypoint: str, args: list[str], *,
               extra_env: dict[str, str] | None = None,
               volumes: list[str] | None = None) -> list[str]:
    ct = inv.container
    argv = ["docker", "run", "--rm", "--name", name, "--network", ct.network,
            "--label", f"{LABEL_CLUSTER}={inv.cluster}", "--label", f"{LABEL_ROLE}={ROLE}"]
    if ct.ipc:
        argv += ["--ipc", ct.ipc]
    if ct.gpus != "none":
        argv += ["--gpus", ct.gpus]
    argv += ["--shm-size", ct.shm_size]
    for dev in ct.devices:
        argv += ["--device", dev]
    for cap in ct.cap_add:
        argv += ["--cap-add", cap]
    for key, val in ct.ulimits.items():
        argv += ["--ulimit", f"{key}={val}"]
    env = {**container_env(inv, node), **(extra_env or {})}
    for key, val in env.items():
        argv += ["-e", f"{key}={val}"]
    for vol in volumes or []:
        argv += ["-v", vol]
    argv += [*ct.extra_args, "--entrypoint", entrypoint, image_ref(inv), *args]
    return argv


def remove(*names: str) -> list[str]:
    """Remove measurement containers: leftovers of an interrupted run, or one that outlived
    a timed-out command (a closed SSH channel does not stop `docker run`)."""
    return shell('docker rm -f "$@" >/dev/null 2>&1; true', *names)


def all_names(inv: InventoryModel) -> list[str]:
    return [container_name(inv, w) for w in ("tools", "ibw-server", "ibw-client", "nccl")]


#: Lists the measurement tools the image carries, one `have <tool>` line each.
TOOLS_SCRIPT = (
    "for t in ib_write_bw all_gather_perf all_reduce_perf mpirun; do "
    'command -v "$t" >/dev/null 2>&1 && echo "have $t"; done; '
    'python3 -c "import torch.distributed" >/dev/null 2>&1 && echo "have torch"; true'
)
