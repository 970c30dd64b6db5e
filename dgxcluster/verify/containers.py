"""verify-ib's short-lived measurement containers.

They run the image `start` runs (`core.imageid.expected`) through the one `docker run`
builder (`core.dockerrun`), with the same `container` settings and `container_env` the Ray
containers get, so a measurement inside them says what NCCL in the real containers will
see: a missing /dev/infiniband shows up here as a socket fallback.
"""

from __future__ import annotations

from dgxcluster.core import naming
from dgxcluster.core.containerenv import container_env
from dgxcluster.core.dockerrun import Run, docker_run
from dgxcluster.inventory.schema import InventoryModel
from dgxcluster.remote.command import shell


def run_argv(inv: InventoryModel, node: str, image: str, job: str, entrypoint: str,
             args: list[str], *, extra_env: dict[str, str] | None = None,
             volumes: list[str] | None = None) -> list[str]:
    """`docker run --rm` of measurement `job` (a name from `naming.VERIFY_JOBS`) on `node`."""
    return docker_run(inv.container, Run(
        name=naming.verify_container(inv.cluster, job), image=image, command=args,
        entrypoint=entrypoint, remove=True,
        labels={naming.LABEL_CLUSTER: inv.cluster, naming.LABEL_ROLE: naming.VERIFY_ROLE},
        env={**container_env(inv, node), **(extra_env or {})}, volumes=volumes or []))


def remove(*names: str) -> list[str]:
    """Remove measurement containers: leftovers of an interrupted run, or one that outlived
    a timed-out command (a closed SSH channel does not stop `docker run`)."""
    return shell('docker rm -f "$@" >/dev/null 2>&1; true', *names)


def all_names(inv: InventoryModel) -> list[str]:
    return [naming.verify_container(inv.cluster, job) for job in naming.VERIFY_JOBS]


#: Lists the measurement tools the image carries, one `have <tool>` line each.
TOOLS_SCRIPT = (
    "for t in ib_write_bw all_gather_perf all_reduce_perf mpirun; do "
    'command -v "$t" >/dev/null 2>&1 && echo "have $t"; done; '
    'python3 -c "import torch.distributed" >/dev/null 2>&1 && echo "have torch"; true'
)
