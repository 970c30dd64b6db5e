"""What `start` runs on each node, as pure data: docker run argv, env-file values, the
`vllm serve` command and the config hash recorded in the `dgxcluster.config` label.

Both executors are described here, as argv: `ray` (a `ray start` container per node, then
`vllm serve --distributed-executor-backend ray` launched in the head's), and `native`
(vLLM's multiprocessing executor across nodes: each node's container runs `vllm serve` with
`--nnodes N --node-rank R --master-addr <head fabric IP> --master-port P`, `--headless` on
every rank but 0; with data parallel, `serving/dataparallel.py`'s flags instead). How each
is started and watched is `serving/executors/`.

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
from dgxcluster.core.ranks import node_ranks
from dgxcluster.errors import UsageError
from dgxcluster.inventory import dockeropts
from dgxcluster.remote.command import shell
from dgxcluster.secrets import Secret
from dgxcluster.serving import dataparallel

if TYPE_CHECKING:
    from dgxcluster.core.nodepaths import NodePaths
    from dgxcluster.inventory.schema import InventoryModel

HEAD = "head"
WORKER = "worker"
RAY = "ray"
NATIVE = "native"
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


def container_command(inv: InventoryModel, node: str) -> list[str]:
    """What the node's container runs: `ray start --block` (ray), or vLLM's rank under the
    launcher that records its pid and exit status (native)."""
    if inv.serve.executor == NATIVE:
        return launcher(serve_command(inv, node))
    return ray_command(inv, node)


def docker_run(inv: InventoryModel, node: str, paths: NodePaths, image: str,
               config: str) -> list[str]:
    """The whole `docker run` for one node's container (secrets only via --env-file)."""
    role = role_of(inv, node)
    c = inv.container
    volumes = [f"{paths.expand(c.hf_cache)}:{dockerrun.CONTAINER_HF_HOME}",
               f"{paths.log_dir}:{CONTAINER_LOG_DIR}",
               *(_volume(vol, paths) for vol in c.volumes)]
    return dockerrun.docker_run(c, dockerrun.Run(
        name=naming.container_name(inv.cluster, role), image=image,
        command=container_command(inv, node), detach=True,
        labels={naming.LABEL_CLUSTER: inv.cluster, naming.LABEL_ROLE: role,
                naming.LABEL_NODE: node, naming.LABEL_CONFIG: config,
                naming.LABEL_EXECUTOR: inv.serve.executor},
        env=container_env(inv, node), env_file=paths.env_file(role), volumes=volumes))


def model_id(inv: InventoryModel) -> str:
    """The name clients use in requests (and /v1/models lists)."""
    return inv.serve.served_model_name or require_model(inv)


def require_model(inv: InventoryModel) -> str:
    if not inv.serve.model:
        raise UsageError("no model to serve: set serve.model in the inventory "
                         "(or DGXCLUSTER_SERVE__MODEL)", "serve.model")
    return inv.serve.model


def serve_command(inv: InventoryModel, node: str | None = None) -> list[str]:
    """`vllm serve` with the configured flags, as `node` (default: the head) runs it: over
    Ray, or as its rank of vLLM's own executor. Every rank gets the same flags but its own
    `--node-rank` (and `--headless`), as vLLM's multi-node docs run it."""
    s = inv.serve
    argv = ["vllm", "serve", require_model(inv)]
    if s.served_model_name:  # early: its nargs="+" must end at the next option, not eat extra_args
        argv += ["--served-model-name", s.served_model_name]
    argv += ["--tensor-parallel-size", str(s.tensor_parallel_size)]
    if s.pipeline_parallel_size > 1:
        argv += ["--pipeline-parallel-size", str(s.pipeline_parallel_size)]
    argv += executor_flags(inv, node or inv.head_name)
    argv += ["--host", listen_host(inv), "--port", str(s.port)]
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


def executor_flags(inv: InventoryModel, node: str) -> list[str]:
    """How vLLM spans the nodes (vllm/config/parallel.py, vllm/entrypoints/cli/serve.py):
    `ray`, or `mp` (multiprocessing) with the node count, this node's rank, and where rank 0
    listens for the others (torch.distributed's TCP store on the head's fabric address).
    vLLM refuses `--nnodes` > 1 with any backend but mp, uni or external_launcher."""
    if inv.serve.executor != NATIVE:
        return ["--distributed-executor-backend", "ray"]
    if inv.serve.data_parallel_size > 1:  # its flags carry --nnodes.. where a replica spans nodes
        return ["--distributed-executor-backend", "mp", *dataparallel.node_argv(inv, node)]
    ranks = node_ranks(inv)
    rank = ranks[node]
    return ["--distributed-executor-backend", "mp", "--nnodes", str(len(ranks)),
            "--node-rank", str(rank), "--master-addr", str(inv.head_node.fabric_ip),
            "--master-port", str(inv.serve.master_port), *(["--headless"] if rank else [])]


def launcher(argv: list[str]) -> list[str]:
    """`argv` (vLLM) run by the launcher: output to the log, pid and exit status recorded."""
    return shell(_LAUNCH, CONTAINER_LOG_DIR, *argv)


def serve_exec(inv: InventoryModel) -> list[str]:
    """`docker exec -d` that starts vLLM in the head container, detached from this session."""
    head = naming.container_name(inv.cluster, HEAD)
    return ["docker", "exec", "-d", head, *launcher(serve_command(inv))]


def head_ports(inv: InventoryModel) -> dict[int, str]:
    """The ports a new head container binds on the head's host network, and whose they are."""
    if inv.serve.executor == NATIVE:
        out = {inv.serve.port: "vLLM's API (serve.port)"}
        if dataparallel.uses_master_port(inv):
            out[inv.serve.master_port] = "vLLM rank 0's --master-port (serve.master_port)"
        if inv.serve.data_parallel_size > 1:
            out[inv.serve.data_parallel_rpc_port] = (
                "vLLM's --data-parallel-rpc-port, where the replicas join the head "
                "(serve.data_parallel_rpc_port)")
        return out
    return {inv.ray.port: "Ray's GCS (ray.port)",
            inv.ray.dashboard_port: "Ray's dashboard (ray.dashboard_port)",
            inv.serve.port: "vLLM's API (serve.port)"}


def node_ports(inv: InventoryModel, node: str) -> dict[int, str]:
    """The ports a new container of `node` binds on its host network: the head's
    (`head_ports`), and with replicas that span nodes each replica leader's --master-port."""
    if node == inv.head_name:
        return head_ports(inv)
    if inv.serve.executor == NATIVE and dataparallel.leader_of(inv, node) == node:
        return {inv.serve.master_port: "its replica's --master-port, where the replica's ranks "
                                       "meet (serve.master_port)"}
    return {}


def runs_vllm(inv: InventoryModel, node: str) -> bool:
    """Does the node's own container run vLLM (the head's; every node's with native)?"""
    return inv.serve.executor == NATIVE or role_of(inv, node) == HEAD


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


#: Whether the nodes bring the cluster back at boot (`serving.persist`), not what runs: left
#: out of the config hash, so `start --persist` on a running cluster only installs the units.
PERSIST_KEYS = ("persist",)


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
        "serve": {**inv.serve.model_dump(mode="json", exclude=_not_hashed(inv)),
                  "host": listen_host(inv)},
        "secrets": sorted(inv.secrets.env),
    }
    blob = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:CONFIG_HASH_LEN]


def _not_hashed(inv: InventoryModel) -> set[str]:
    """What shapes how we wait, what we print or what the watcher does, not what runs
    (`_NOT_RUN`, `WATCH_KEYS`). The executor's keys enter only for native, so a Ray cluster
    started before they existed keeps its hash (no spurious restart)."""
    out = _NOT_RUN | set(WATCH_KEYS) | set(PERSIST_KEYS)
    if inv.serve.data_parallel_size == 1:  # a cluster started before the key keeps its hash
        out.add("data_parallel_rpc_port")
    return out if inv.serve.executor == NATIVE else out | {"executor", "master_port"}


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


def prepare_dirs(inv: InventoryModel, paths: NodePaths, new_vllm: bool = False) -> list[str]:
    """mkdir the node's state dirs (env-files 0700) and the HF cache before docker -v; for a
    container that will run vLLM anew (the head's; every rank's with native), forget the
    previous vLLM's pid and exit status (new pid namespace)."""
    script = ('umask 077 && mkdir -p "$1" "$2" && chmod 700 "$1" && umask 022 && mkdir -p "$3"'
              + (f' && rm -f "$2/{VLLM_PID}" "$2/{VLLM_EXIT}"' if new_vllm else ""))
    return shell(script, paths.env_dir, paths.log_dir, paths.expand(inv.container.hf_cache))


def node_commands(inv: InventoryModel, node: str, paths: NodePaths, image: str, config: str,
                  secrets: Mapping[str, Secret]) -> NodeCommands:
    role = role_of(inv, node)
    return NodeCommands(
        node=node, role=role, container=naming.container_name(inv.cluster, role),
        env_file=paths.env_file(role), env_values=env_file_values(secrets, inv, role),
        docker_run=docker_run(inv, node, paths, image, config),
        prepare=prepare_dirs(inv, paths, runs_vllm(inv, node)),
    )
