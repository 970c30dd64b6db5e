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

from dgxcluster.inventory.dockeropts import CONTAINER_HF_HOME

if TYPE_CHECKING:
    from dgxcluster.inventory.schema import ContainerSettings

__all__ = ["CONTAINER_HF_HOME", "Run", "docker_run"]
#: CONTAINER_HF_HOME: where the node's HF cache (`container.hf_cache`) is mounted in every
#: container that reads or writes models (the Ray containers, the hub download); the
#: inventory refuses a `container.volumes` entry that targets it.


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
    argv = ["docker", "run", *(["-d"] if run.detach else []), *(["--rm"] if run.remove else []),
            "--name", run.name, *_assignments("--label", run.labels),
            "--network", settings.network]
    if run.user is not None:
        argv += ["--user", run.user]
    if run.accelerated:
        argv += _accelerated(settings)
    argv += [a for vol in run.volumes for a in ("-v", vol)]
    if run.env_file is not None:
        argv += ["--env-file", run.env_file]
    argv += _assignments("-e", run.env)
    if run.accelerated:
        argv += list(settings.extra_args)
    if run.entrypoint is not None:
        argv += ["--entrypoint", run.entrypoint]
    return [*argv, run.image, *run.command]


def _accelerated(c: ContainerSettings) -> list[str]:
    argv = ["--ipc", c.ipc] if c.ipc else []
    argv += ["--shm-size", c.shm_size]
    gpus = c.gpus_arg  # quoted for docker's CSV reading: "device=0,1"
    if gpus is not None:
        argv += ["--gpus", gpus]
    argv += [a for dev in c.devices for a in ("--device", dev)]
    argv += [a for cap in c.cap_add for a in ("--cap-add", cap)]
    return argv + _assignments("--ulimit", c.ulimits)


def _assignments(flag: str, values: Mapping[str, str]) -> list[str]:
    """`flag KEY=VALUE` for each item, in order."""
    return [a for key, value in values.items() for a in (flag, f"{key}={value}")]
