"""One `docker run` for every container dgxcluster starts: the Ray containers (`start`),
verify-ib's measurement containers and `model pull`'s download container.

The inventory's `container` settings (network, IPC, shared memory, GPUs, devices,
capabilities, ulimits, extra arguments) enter in one place, so a measurement container sees
exactly what the Ray containers see; each use adds its own parts (name, labels, env,
volumes, command). Pure: an argv list, quoted later by `remote.command`. Secrets never
appear here: they reach a container only through `--env-file`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dgxcluster.inventory.schema import ContainerSettings

#: Where the node's HF cache (`container.hf_cache`) is mounted in every container that reads
#: or writes models: the Ray containers (vLLM looks there) and the hub download.
CONTAINER_HF_HOME = "/root/.cache/huggingface"


@dataclass(frozen=True)
class Run:
    """The parts of one `docker run` that belong to its use, not to the inventory."""

    name: str
    image: str
    command: Sequence[str] = ()
    entrypoint: str | None = None
    detach: bool = False  # -d: outlives this SSH session (the Ray containers)
    remove: bool = False  # --rm: gone when its command ends (measurements, downloads)
    labels: Mapping[str, str] = field(default_factory=dict)
    env: Mapping[str, str] = field(default_factory=dict)  # visible -e values, never secrets
    env_file: str | None = None  # the 0600 file that carries the secrets
    volumes: Sequence[str] = ()
    user: str | None = None
    #: The GPU/RDMA side of `container` (IPC, shm, GPUs, devices, capabilities, ulimits) and
    #: its `extra_args`. Off for a helper that needs none of it (the hub download).
    accelerated: bool = True


def docker_run(settings: ContainerSettings, run: Run) -> list[str]:
    """The whole argv; `settings` is the inventory's `container` section."""
    argv = ["docker", "run"]
    if run.detach:
        argv.append("-d")
    if run.remove:
        argv.append("--rm")
    argv += ["--name", run.name]
    for key, value in run.labels.items():
        argv += ["--label", f"{key}={value}"]
    argv += ["--network", settings.network]
    if run.user is not None:
        argv += ["--user", run.user]
    if run.accelerated:
        argv += _accelerated(settings)
    for vol in run.volumes:
        argv += ["-v", vol]
    if run.env_file is not None:
        argv += ["--env-file", run.env_file]
    for key, value in run.env.items():
        argv += ["-e", f"{key}={value}"]
    if run.accelerated:
        argv += list(settings.extra_args)
    if run.entrypoint is not None:
        argv += ["--entrypoint", run.entrypoint]
    argv.append(run.image)
    argv += list(run.command)
    return argv


def _accelerated(c: ContainerSettings) -> list[str]:
    argv: list[str] = []
    if c.ipc:
        argv += ["--ipc", c.ipc]
    argv += ["--shm-size", c.shm_size]
    if c.gpus != "none":
        argv += ["--gpus", c.gpus]
    for dev in c.devices:
        argv += ["--device", dev]
    for cap in c.cap_add:
        argv += ["--cap-add", cap]
    for name, limit in c.ulimits.items():
        argv += ["--ulimit", f"{name}={limit}"]
    return argv
