"""What `start` runs on each node, as pure data: docker run argv, env-file values, the
`vllm serve` command and the config hash recorded in the `dgxcluster.config` label.

Nothing here touches the network, so unit tests check the exact argv, and `--dry-run`
prints the same commands a real start would run.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from dgxcluster.core import dockerrun, naming
from dgxcluster.core.containerenv import container_env
from dgxcluster.core.endpoint import VLLM_KEY_ENV, api_key, listen_host
from dgxcluster.core.nodepaths import VLLM_EXIT, VLLM_LOG, VLLM_PID
from dgxcluster.errors import UsageError
from dgxcluster.inventory import dockeropts
from dgxcluster.remote.command import shell
from dgxcluster.secrets import Secret

if TYPE_CHECKING:
    from dgxcluster.core.nodepaths import NodePaths
    from dgxcluster.inventory.schema import InventoryModel

HEAD = "head"
WORKER = "worker"
#: Where the node's `NodePaths.log_dir` appears inside the containers.
CONTAINER_LOG_DIR = dockeropts.CONTAINER_LOG_DIR  # the inventory keeps volumes off it
CONFIG_HASH_LEN = 16

# Runs inside the head container (docker exec -d): vLLM in the background with its output
# in the log file, its pid recorded for a graceful stop, its exit status recorded so
# `start` can fail fast when it dies. Values arrive as $1.., never spliced into the text.
_LAUNCH = (
    f'd="$1"; shift; rm -f "$d/{VLLM_EXIT}"; '
    f'"$@" >"$d/{VLLM_LOG}" 2>&1 </dev/null & pid=$!; '
    f'echo "$pid" >"$d/{VLLM_PID}"; wait "$pid"; echo "$?" >"$d/{VLLM_EXIT}"'
)


def role_of(inv: InventoryModel, node: str) -> str:
    return HEAD if node == inv.head_name else WORKER


def ray_command(inv: InventoryModel, node: str) -> list[str]:
    """`ray start --block ...` for the node's container; the fabric address everywhere."""
    spec = inv.node(node)
    ray = inv.ray
    if role_of(inv, node) == HEAD:
        argv = ["ray", "start", "--head", "--block", f"--node-ip-address={spec.fabric_ip}",
                f"--port={ray.port}", f"--dashboard-port={ray.dashboard_port}"]
    else:
        argv = ["ray", "start", "--block", f"--address={inv.head_node.fabric_ip}:{ray.port}",
                f"--node-ip-address={spec.fabric_ip}"]
    # each node's metrics agent on a known port, so `metrics targets` names a real endpoint
    argv.append(f"--metrics-export-port={ray.metrics_export_port}")
    if ray.num_gpus is not None:
        argv.append(f"--num-gpus={ray.num_gpus}")
    return argv


def _volume(spec: str, paths: NodePaths) -> str:
    host, sep, rest = spec.partition(":")
    return f"{paths.expand(host)}{sep}{rest}"


def docker_run(inv: InventoryModel, node: str, paths: NodePaths, image: str,
               config: str) -> list[str]:
    """The whole `docker run` for one node's Ray container (secrets only via --env-file)."""
    role = role_of(inv, node)
    c = inv.container
    volumes = [f"{paths.expand(c.hf_cache)}:{dockerrun.CONTAINER_HF_HOME}",
               f"{paths.log_dir}:{CONTAINER_LOG_DIR}",
               *(_volume(vol, paths) for vol in c.volumes)]
    return dockerrun.docker_run(c, dockerrun.Run(
        name=naming.container_name(inv.cluster, role), image=image,
        command=ray_command(inv, node), detach=True,
        labels={naming.LABEL_CLUSTER: inv.cluster, naming.LABEL_ROLE: role,
                naming.LABEL_NODE: node, naming.LABEL_CONFIG: config},
        env=container_env(inv, node), env_file=paths.env_file(role), volumes=volumes))


def model_id(inv: InventoryModel) -> str:
    """The name clients use in requests (and /v1/models lists)."""
    return inv.serve.served_model_name or require_model(inv)


def require_model(inv: InventoryModel) -> str:
    if not inv.serve.model:
        raise UsageError("no model to serve: set serve.model in the inventory "
                         "(or DGXCLUSTER_SERVE__MODEL)", "serve.model")
    return inv.serve.model


def serve_command(inv: InventoryModel) -> list[str]:
    """`vllm serve` with tensor parallelism over Ray, plus the configured flags."""
    s = inv.serve
    argv = ["vllm", "serve", require_model(inv)]
    if s.served_model_name:  # early: its nargs="+" must end at the next option, not eat extra_args
        argv += ["--served-model-name", s.served_model_name]
    argv += ["--tensor-parallel-size", str(s.tensor_parallel_size)]
    if s.pipeline_parallel_size > 1:
        argv += ["--pipeline-parallel-size", str(s.pipeline_parallel_size)]
    argv += ["--distributed-executor-backend", "ray", "--host", listen_host(inv),
             "--port", str(s.port)]
    if s.revision:
        argv += ["--revision", s.revision]
    if s.max_model_len is not None:
        argv += ["--max-model-len", str(s.max_model_len)]
    if s.gpu_memory_utilization is not None:
        argv += ["--gpu-memory-utilization", f"{s.gpu_memory_utilization:g}"]
    argv += list(s.extra_args)
    return argv


# Run as the container's user before the launch, in the foreground: can it write the log
# directory (vllm.log, vllm.pid, vllm.exit)? A detached launch that cannot is silent.
# `true`, not `:`: a failed redirection on a special builtin ends a POSIX shell outright.
_LAUNCH_CHECK = (
    f'd="$1"; true >"$d/{VLLM_LOG}" && true >"$d/{VLLM_PID}" && rm -f "$d/{VLLM_PID}" '
    '|| { echo "container user $(id -u):$(id -g)" >&2; exit 73; }'
)
#: Exit status of `launch_check` when the container's user cannot write the log directory.
LAUNCH_CHECK_EXIT = 73


def launch_check(inv: InventoryModel) -> list[str]:
    """`docker exec` (foreground) that creates this run's empty vllm.log as the container's
    user, or says which user could not."""
    head = naming.container_name(inv.cluster, HEAD)
    return ["docker", "exec", head, *shell(_LAUNCH_CHECK, CONTAINER_LOG_DIR)]


def serve_exec(inv: InventoryModel) -> list[str]:
    """`docker exec -d` that starts vLLM in the head container, detached from this session."""
    head = naming.container_name(inv.cluster, HEAD)
    return ["docker", "exec", "-d", head, *shell(_LAUNCH, CONTAINER_LOG_DIR, *serve_command(inv))]


def gpus_needed(inv: InventoryModel) -> int:
    return inv.serve.tensor_parallel_size * inv.serve.pipeline_parallel_size


def env_file_values(secrets: Mapping[str, Secret], inv: InventoryModel | None = None,
                    role: str = HEAD) -> dict[str, str | Secret]:
    """What goes in the 0600 env-file: the secrets, and only them (the rest is visible -e).
    The API key `serve.api_key` names goes to the head alone (the node serving the API), as
    VLLM_API_KEY, the variable vLLM reads when `--api-key` is not given."""
    key_name = inv.serve.api_key if inv is not None else None
    values: dict[str, str | Secret] = {name: secrets[name] for name in sorted(secrets)
                                       if name not in (key_name, VLLM_KEY_ENV)}
    if inv is not None and key_name is not None and role == HEAD:
        key = api_key(inv, secrets)
        if key is not None:
            values[VLLM_KEY_ENV] = key
    return values


#: How the running cluster is watched (`serving.supervise`), not what runs: left out of the
#: config hash, so changing them needs no restart (start updates the watcher).
WATCH_KEYS = ("restart", "max_restarts", "restart_window_s", "restart_backoff_s",
              "restart_backoff_max_s", "health_interval_s", "health_failures")


#: Serve settings that shape how we wait or what we print, not what runs.
_NOT_RUN = {"ready_timeout_s", "stop_timeout_s", "public_host", "endpoint_via"}


def config_hash(inv: InventoryModel, image: str) -> str:
    """Hash of everything that shapes the running cluster; a change means a restart.

    Timeouts are left out (they shape how we wait, not what runs). Secrets enter only as the
    names the inventory configures: whether this shell happens to export HF_TOKEN must not
    turn a healthy cluster into a "different config" (a rotated token needs `--restart`).
    """
    doc = {
        "v": 1,
        "cluster": inv.cluster,
        "head": inv.head_name,
        "image": image,
        "nodes": [{"name": n.name, "fabric_ip": str(n.fabric_ip), "env": container_env(inv, n.name)}
                  for n in inv.nodes],
        "container": inv.container.model_dump(mode="json"),
        "ray": inv.ray.model_dump(mode="json", exclude={"start_timeout_s"}),
        "serve": {**inv.serve.model_dump(mode="json", exclude=_NOT_RUN | set(WATCH_KEYS)),
                  "host": listen_host(inv)},
        "secrets": sorted(inv.secrets.env),
    }
    blob = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:CONFIG_HASH_LEN]


@dataclass(frozen=True)
class NodeCommands:
    """Everything start would run on one node, for --dry-run and for the real run."""

    node: str
    role: str
    container: str
    env_file: str
    env_values: dict[str, str | Secret]
    docker_run: list[str]
    prepare: list[str] = field(default_factory=list)


def prepare_dirs(inv: InventoryModel, paths: NodePaths, new_head: bool = False) -> list[str]:
    """mkdir the node's state dirs (env-files 0700) and the HF cache before docker -v; for a
    new head container, forget the previous vLLM's pid and exit status (new pid namespace)."""
    script = ('umask 077 && mkdir -p "$1" "$2" && chmod 700 "$1" && umask 022 && mkdir -p "$3"'
              + (f' && rm -f "$2/{VLLM_PID}" "$2/{VLLM_EXIT}"' if new_head else ""))
    return shell(script, paths.env_dir, paths.log_dir, paths.expand(inv.container.hf_cache))


def node_commands(inv: InventoryModel, node: str, paths: NodePaths, image: str, config: str,
                  secrets: Mapping[str, Secret]) -> NodeCommands:
    role = role_of(inv, node)
    return NodeCommands(
        node=node, role=role, container=naming.container_name(inv.cluster, role),
        env_file=paths.env_file(role), env_values=env_file_values(secrets, inv, role),
        docker_run=docker_run(inv, node, paths, image, config),
        prepare=prepare_dirs(inv, paths, role == HEAD),
    )
