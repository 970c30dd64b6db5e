"""The inventory model: pure data and validation, no I/O, no network.

One file describes the cluster. Every model forbids unknown keys, so a typo is an
error rather than a silently ignored setting. Later capabilities read their own
section (`fabric`, `image`, `container`, `ray`, `serve`, `model`, `secrets`).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from ipaddress import IPv4Address, IPv4Interface, IPv4Network, ip_address
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from dgxcluster.inventory import crosschecks, dockergpus, dockeropts, imageref, placement, topology
from dgxcluster.inventory.jumps import JumpHop, parse_jump
from dgxcluster.secrets import HF_TOKEN_SHAPE, SECRET_NAME_WORDS

NAME_RE = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"
IFACE_RE = r"^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,14}$"
RDMA_RE = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
ENV_NAME_RE = r"^[A-Za-z_][A-Za-z0-9_]*$"

Name = Annotated[str, Field(pattern=NAME_RE, description="letters, digits, '.', '_', '-'")]
Interface = Annotated[str, Field(pattern=IFACE_RE, description="a Linux net device name")]
RdmaDevice = Annotated[str, Field(pattern=RDMA_RE, description="an RDMA device (hca_id)")]
Port = Annotated[int, Field(ge=1, le=65535)]
Seconds = Annotated[float, Field(gt=0, le=86400)]


def _check_jump(v: str) -> str:
    parse_jump(v)
    return v


#: Jump hosts in OpenSSH's ProxyJump syntax (inventory/jumps.py), checked at load.
Jump = Annotated[str, Field(max_length=2048), AfterValidator(_check_jump)]


class Strict(BaseModel):
    """Base for every inventory section: unknown keys are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


def _no_control_chars(value: str, what: str) -> str:
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ValueError(f"{what} must not contain control characters (newline, tab, ...)")
    return value


def _argv_items(values: list[str]) -> list[str]:
    """Each item becomes one argv element as written (spaces, quotes, `;` and all); only a NUL
    byte cannot be carried by a command line."""
    for i, v in enumerate(values):
        if "\0" in v:
            raise ValueError(f"item {i} contains a NUL byte, which no command line can carry")
    return values


def _not_an_option(value: str | None, what: str) -> str | None:
    """A value passed as a positional argument or an option's value must not read as an option."""
    if value is None:
        return None
    _no_control_chars(value, what)
    if value.startswith("-"):
        raise ValueError(f"{what} must not start with '-' (vllm serve would read it as an option)")
    return value


def _ip_version(host: str) -> int | None:
    try:
        return ip_address(host.split("%", 1)[0]).version
    except ValueError:
        return None


def _node_path(value: str, what: str) -> str:
    """A directory on every node: absolute or under `~`, and usable in `docker -v HOST:CONTAINER`."""
    _no_control_chars(value, what)
    if "\0" in value:
        raise ValueError(f"{what} must not contain a NUL byte")
    if not (value.startswith("/") or value == "~" or value.startswith("~/")):
        raise ValueError(f"{what} must be an absolute path or start with ~/ (got {value!r})")
    if ":" in value:
        raise ValueError(f"{what} must not contain ':' (docker -v separates HOST:CONTAINER with it)")
    return value


#: Values that are switches, not secrets (HF_HUB_DISABLE_IMPLICIT_TOKEN=1).
_FLAG_VALUES = frozenset({"", "0", "1", "true", "false", "yes", "no", "on", "off"})


def secret_in_inventory(key: str, value: str) -> str | None:
    """Why `key: value` looks like a secret value written into the inventory, or None."""
    if HF_TOKEN_SHAPE.search(value):
        return "its value is a Hugging Face token"
    upper = key.upper()
    if value.strip().lower() not in _FLAG_VALUES and any(w in upper for w in SECRET_NAME_WORDS):
        return "its name says it is a secret"
    return None


def _secret_hint(key: str) -> str:
    return (f"the inventory holds no secret values: put {key}=... in the file named by "
            f"secrets.file (mode 0600) or export it, and list {key} in secrets.env")


class Rail(Strict):
    """One fabric rail: a net device and the RDMA device behind it (a CX-7 twin)."""

    interface: Interface
    rdma_device: RdmaDevice | None = None


class LinkEnd(Strict):
    """One end of a cable of a ring or mesh: a node's interface (and RDMA device) and address."""

    node: Name
    interface: Interface
    rdma_device: RdmaDevice | None = Field(
        default=None, description="default: the DGX Spark name of the interface's twin "
                                  "(enp1s0f0np0 -> rocep1s0f0)")
    address: IPv4Address


class Link(Strict):
    """One cable (one twin of it) of a ring or mesh: two ends on a subnet of their own."""

    subnet: IPv4Network
    ends: list[LinkEnd] = Field(min_length=2, max_length=2)

    @field_validator("subnet", mode="before")
    @classmethod
    def _network(cls, v: object) -> object:
        if isinstance(v, str) and "/" in v:
            try:
                IPv4Network(v, strict=True)
            except ValueError as exc:
                if "host bits set" in str(exc):
                    raise ValueError(f"{v} has host bits set: write the network, e.g. "
                                     f"{IPv4Network(v, strict=False)}") from None
        return v


class NodeSpec(Strict):
    """One machine: how to reach it over SSH and its address on the ConnectX-7 fabric."""

    name: Name
    host: str = Field(min_length=1, max_length=253, description="hostname, IP or ~/.ssh/config alias")
    port: Port = 22
    user: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,31}$")
    fabric_ip: IPv4Address
    rail_ips: list[IPv4Address] | None = Field(
        default=None,
        description="address on each fabric rail, in fabric.rails order; defaults to [fabric_ip]",
    )
    jump: Jump | None = Field(
        default=None, description="jump host(s); a hop may name a node; 'none': direct")
    rails: list[Rail] | None = Field(
        default=None, min_length=1,
        description="this node's rails when they differ from fabric.rails (cabled on another "
                    "QSFP port: asymmetric cabling)")

    @field_validator("host")
    @classmethod
    def _host_is_plain(cls, v: str) -> str:
        _no_control_chars(v, "host")
        if v.startswith("-") or re.search(r"[\s'\"`$;|&<>\\]", v):
            raise ValueError("host must be a hostname, an IP address or an ssh config alias")
        return v

    @property
    def rail_addresses(self) -> list[IPv4Address]:
        """The node's address on each of its rails (direct/switch fabrics), first = fabric_ip."""
        return list(self.rail_ips) if self.rail_ips else [self.fabric_ip]


class SshSettings(Strict):
    """How every node is reached. Host keys are always checked."""

    user: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,31}$")
    identity_file: Path | None = None
    known_hosts: Path = Path("~/.ssh/known_hosts")
    host_key_policy: Literal["strict", "accept-new"] = "strict"
    connect_timeout: Seconds = 10.0
    command_timeout: Seconds = 300.0
    max_parallel: int = Field(default=64, ge=1, le=64)
    keepalive_s: Seconds = 15.0
    jump: Jump | None = Field(
        default=None, description="jump host(s) for every node without its own nodes[].jump")


def _spark_rails() -> list[Rail]:
    return [
        Rail(interface="enp1s0f1np1", rdma_device="rocep1s0f1"),
        Rail(interface="enP2p1s0f1np1", rdma_device="roceP2p1s0f1"),
    ]


class FabricSettings(Strict):
    """The RoCE fabric every node shares (defaults: DGX Spark, cable in QSFP port 1)."""

    topology: Literal["direct", "switch", "ring", "mesh"] | None = Field(
        default=None, description="how the nodes are cabled; inferred when unambiguous "
                                  "(inventory/topology.py)")
    rails: list[Rail] = Field(default_factory=_spark_rails, min_length=1)
    prefix_length: int = Field(default=24, ge=8, le=30,
                               description="subnet size of each rail (direct, switch)")
    links: list[Link] = Field(default_factory=list,
                              description="ring/mesh: each cable twin, its two ends and subnet")
    bootstrap_interface: Interface | None = Field(
        default=None, description="the interface carrying fabric_ip on a ring or mesh (NCCL's "
                                  "bootstrap, Ray, vLLM): default enP7s7, the management port")
    mtu: int = Field(default=9000, ge=576, le=65536)
    link_speed_mbps: int = Field(default=200000, ge=1)
    nccl_ib_gid_index: int | None = Field(default=3, ge=0, le=255)
    min_busbw_gbs: float | None = Field(
        default=None, gt=0, description="NCCL busbw floor; default by topology (21.875 direct/"
                                        "switch, 10 ring/mesh: NVIDIA's cluster setup floors)")
    min_ib_write_gbits: float = Field(default=90.0, gt=0, description="ib_write_bw floor per rail")
    nccl_env: dict[str, str] = Field(default_factory=dict, description="extra NCCL_* settings")

    @property
    def interfaces(self) -> list[str]:
        return [r.interface for r in self.rails]

    @property
    def rdma_devices(self) -> list[str]:
        return [r.rdma_device for r in self.rails if r.rdma_device]

    @field_validator("nccl_env")
    @classmethod
    def _env_keys(cls, v: dict[str, str]) -> dict[str, str]:
        return _check_env(v)


def _check_env(v: dict[str, str]) -> dict[str, str]:
    for key, val in v.items():
        if not re.match(ENV_NAME_RE, key):
            raise ValueError(f"{key!r} is not a valid environment variable name")
        if "\n" in val or "\r" in val or "\0" in val:
            raise ValueError(f"value of {key} must not contain a newline or NUL")
        why = secret_in_inventory(key, val)
        if why:
            raise ValueError(f"{key} looks like a secret ({why}); {_secret_hint(key)}")
    return v


class RegistryLogin(Strict):
    """Credentials for a private registry. The password is never here: `password_secret` names
    the variable (in the environment or `secrets.file`) that holds it."""

    user: str = Field(min_length=1, max_length=256, description="not a secret; NGC: $oauthtoken")
    password_secret: str = Field(pattern=ENV_NAME_RE, description="e.g. NGC_API_KEY")
    registry: str | None = Field(default=None, description="default: the registry of image.ref")

    @field_validator("user", "registry")
    @classmethod
    def _plain(cls, v: str | None) -> str | None:
        return _not_an_option(v, "value")


class ImageSettings(Strict):
    """The image every node runs: built from a context (its tag is derived from the content)
    or pulled by reference on one node and shipped to the others (`source: pull`)."""

    source: Literal["build", "pull"] = "build"
    ref: str | None = Field(default=None, max_length=512,
                            description="source pull: REPOSITORY[:TAG][@DIGEST] to pull")
    login: RegistryLogin | None = None
    name: str = Field(default="dgxcluster/vllm-gb10", pattern=r"^[a-z0-9][a-z0-9._/-]{0,127}$")
    context: Path = Path("../images/vllm-gb10")
    dockerfile: str = Field(default="Dockerfile", min_length=1)
    build_args: dict[str, str] = Field(default_factory=dict)
    strategy: Literal["each", "distribute"] = "distribute"
    build_node: Name | None = Field(default=None, description="builder for distribute; default head")
    build_timeout_s: Seconds = 4 * 3600.0

    @field_validator("build_args")
    @classmethod
    def _args(cls, v: dict[str, str]) -> dict[str, str]:
        return _check_env(v)

    @field_validator("ref")
    @classmethod
    def _ref(cls, v: str | None) -> str | None:
        if v is not None:
            imageref.parse(v)
        return v

    @model_validator(mode="after")
    def _pull_needs(self) -> ImageSettings:
        if self.source != "pull":
            return self
        if self.ref is None:
            raise ValueError("image.source: pull needs image.ref, the image to pull "
                             "(e.g. nvcr.io/nvidia/vllm:26.10-py3)")
        if self.strategy == "each":
            raise ValueError("image.source: pull pulls on one node and ships that copy to the "
                             "others (strategy: distribute); pulling on every node can give "
                             "different images when the tag moves")
        return self


def _docker_checked(check: Callable[[str], object]) -> AfterValidator:
    """An item validator from a `dockeropts` check (its error names the item's index)."""

    def run(v: str) -> str:
        check(v)
        return v

    return AfterValidator(run)


Device = Annotated[str, _docker_checked(dockeropts.check_device)]
Capability = Annotated[str, _docker_checked(dockeropts.check_capability)]
Volume = Annotated[str, _docker_checked(dockeropts.volume_target)]


class ContainerSettings(Strict):
    """`docker run` options for the Ray containers; defaults are the DGX Spark ones. Each value
    is checked for what Docker makes of it (`dockeropts`, `dockergpus`: Docker's own parsing)."""

    gpus: str = Field(default="all", min_length=1, max_length=1024,
                      description="all | none | N | device=0,1 | docker's --gpus syntax")
    network: str = Field(default="host", pattern=r"^[a-z0-9_.-]+$")
    ipc: str | None = Field(default="host", pattern=r"^[a-z0-9_:.-]+$")
    shm_size: str = Field(default="10.24g", max_length=64)
    devices: list[Device] = Field(default_factory=lambda: ["/dev/infiniband"])
    cap_add: list[Capability] = Field(default_factory=lambda: ["IPC_LOCK"])
    ulimits: dict[str, str] = Field(default_factory=lambda: {"memlock": "-1"})
    hf_cache: str = Field(default="~/.cache/huggingface", min_length=1, max_length=1024)
    volumes: list[Volume] = Field(default_factory=list, description="extra HOST:CONTAINER[:MODE]")
    env: dict[str, str] = Field(default_factory=dict, description="extra env set at docker run")
    extra_args: list[str] = Field(default_factory=list, description="extra docker run options")

    @field_validator("gpus")
    @classmethod
    def _gpus(cls, v: str) -> str:
        _no_control_chars(v, "gpus")
        if v != "none":
            dockergpus.read(v)
        return v

    @property
    def gpus_arg(self) -> str | None:
        """The `--gpus` argv element Docker reads as `gpus` means (`"device=0,1"`), or None."""
        return None if self.gpus == "none" else dockergpus.render(dockergpus.read(self.gpus))

    @field_validator("shm_size")
    @classmethod
    def _shm(cls, v: str) -> str:
        dockeropts.check_shm_size(v)
        return v

    @field_validator("ipc")
    @classmethod
    def _ipc(cls, v: str | None) -> str | None:
        if v is not None:
            dockeropts.check_ipc(v)
        return v

    @field_validator("ulimits")
    @classmethod
    def _ulimits(cls, v: dict[str, str]) -> dict[str, str]:
        for name, value in v.items():
            try:
                dockeropts.parse_ulimit(f"{name}={value}")
            except ValueError as exc:
                raise ValueError(f"{name}: {exc}") from None
        return v

    @field_validator("volumes")
    @classmethod
    def _volumes(cls, v: list[str]) -> list[str]:
        for i, why in dockeropts.duplicate_targets(v):
            raise ValueError(f"item {i} ({v[i]}): {why}")
        return v

    @field_validator("extra_args")
    @classmethod
    def _extra(cls, v: list[str]) -> list[str]:
        for i, why in dockeropts.extra_arg_problems(v):
            raise ValueError(f"item {i}: {why}")
        return v

    @field_validator("env")
    @classmethod
    def _env(cls, v: dict[str, str]) -> dict[str, str]:
        return _check_env(v)

    @field_validator("hf_cache")
    @classmethod
    def _cache(cls, v: str) -> str:
        return _node_path(v, "hf_cache")

    @field_validator("extra_args", "devices", "cap_add", "volumes")
    @classmethod
    def _items(cls, v: list[str]) -> list[str]:
        return _argv_items(v)


#: The build argument that carries ray.version into the image (images/*/Dockerfile).
RAY_VERSION_ARG = "RAY_VERSION"


class RaySettings(Strict):
    """The Ray cluster inside the containers (the engine vLLM distributes through)."""

    port: Port = 6379
    dashboard_port: Port = 8265
    metrics_export_port: Port = Field(
        default=8080, description="where each node's Ray metrics agent serves Prometheus text "
        "(`ray start --metrics-export-port`; Ray picks a random port when it is not given)")
    num_gpus: int | None = Field(default=None, ge=0, description="GPUs declared per node")
    start_timeout_s: Seconds = 180.0
    version: str = Field(default="2.57.1", pattern=r"^[0-9][0-9a-z.+-]*$")


Executor = Literal["ray", "native"]
#: NVIDIA's vLLM container release notes ("Known Issues", 26.01-26.10): vLLM's default
#: allocation over-commits DGX Spark's unified memory; its two-Spark playbook passes 0.8.
SAFE_GPU_MEMORY_UTILIZATION = 0.8


class ServeSettings(Strict):
    """What `vllm serve` runs, and across the nodes how: over Ray (`vllm serve` in the head
    container, workers through Ray) or vLLM's own multi-node executor (one `vllm serve` per
    node: rank 0 on the head serves the API, the others run `--headless`)."""

    recipe: str | None = Field(
        default=None, min_length=1, max_length=1024,
        description="a recipe (`dgxcluster recipe ls`) or recipe file; the keys set here win")
    model: str | None = Field(default=None, min_length=1, max_length=512)
    revision: str | None = Field(default=None, max_length=128)
    tensor_parallel_size: int = Field(default=2, ge=1, le=1024)
    pipeline_parallel_size: int = Field(default=1, ge=1, le=1024)
    data_parallel_size: int = Field(
        default=1, ge=1, le=1024, description="replicas behind vLLM's data-parallel front end")
    nodes: list[Name] | None = Field(
        default=None, min_length=1,
        description="the nodes that serve, head first (default: every node)")
    port: Port = 8000
    executor: Executor = Field(
        default="ray", description="ray: a Ray cluster in containers, `vllm serve "
        "--distributed-executor-backend ray` in the head's; native: vLLM's multiprocessing "
        "executor across nodes (`--nnodes/--node-rank/--master-addr/--headless`), no Ray")
    master_port: Port = Field(
        default=29501, description="native executor: the port rank 0 listens on for the other "
        "ranks (vLLM's --master-port; 29501 is vLLM's default)")
    data_parallel_rpc_port: Port = Field(
        default=29550, description="native executor with data_parallel_size > 1: the port the "
        "head's data-parallel front end listens on for the other nodes' replicas (vLLM's "
        "--data-parallel-rpc-port; 29550 is vLLM's default)")
    host: str = "0.0.0.0"  # noqa: S104 - the API must be reachable from the operator's machine
    public_host: str | None = Field(
        default=None, min_length=1, max_length=255, pattern=r"^[^\s/@]+$",
        description="the host clients reach vLLM at: the printed endpoint, and what start's "
                    "readiness check, status, smoke and bench use; default: the head's host "
                    "(an ~/.ssh/config alias resolved to its HostName)")
    endpoint_via: Literal["auto", "direct", "ssh"] = Field(
        default="auto",
        description="how this machine's checks (start's readiness wait, status, smoke) reach "
                    "vLLM: direct (HTTP to the endpoint), ssh (through the head's SSH "
                    "connection to serve.port on the head) or auto (direct, then ssh when the "
                    "endpoint cannot be reached from here but the head can)")
    max_model_len: int | None = Field(default=None, ge=1)
    gpu_memory_utilization: float | None = Field(default=SAFE_GPU_MEMORY_UTILIZATION, gt=0, le=1)
    served_model_name: str | None = Field(default=None, min_length=1, max_length=512)
    extra_args: list[str] = Field(default_factory=list)
    api_key: str | None = Field(
        default=None, pattern=ENV_NAME_RE, max_length=128,
        description="the NAME of a secret (environment or secrets.file, never a value) that "
        "vLLM requires as `Authorization: Bearer` on /v1/*; it reaches vLLM only as "
        "VLLM_API_KEY in the head's 0600 env-file")
    ready_timeout_s: Seconds = 1800.0
    stop_timeout_s: Seconds = Field(
        default=30.0, description="grace period for vLLM to exit on SIGTERM at stop"
    )
    restart: Literal["never", "on-failure"] = Field(
        default="never", description="on-failure: a watcher on the head node brings vLLM back "
        "when it exits or stops answering /health, within max_restarts per restart_window_s")
    max_restarts: int = Field(default=3, ge=1, le=100)
    restart_window_s: Seconds = 600.0
    restart_backoff_s: Seconds = Field(
        default=5.0, description="wait before the first restart, doubled per failure in a row")
    restart_backoff_max_s: Seconds = 300.0
    health_interval_s: Seconds = Field(default=5.0, description="seconds between /health probes")
    health_failures: int = Field(
        default=3, ge=1, le=1000,
        description="/health probes failed in a row (vLLM's process alive) that count as a hang")
    persist: bool = Field(
        default=False, description="come back by itself when the nodes boot: `start` installs "
        "a systemd unit per node (dgxcluster-<cluster>.service) that starts the node's part in "
        "order; `stop` removes it. Not part of the config hash (`start --persist` on a running "
        "cluster just installs it)")

    @field_validator("model", "served_model_name", "revision")
    @classmethod
    def _plain(cls, v: str | None) -> str | None:
        return _not_an_option(v, "value")

    @field_validator("recipe")
    @classmethod
    def _recipe(cls, v: str | None) -> str | None:
        return None if v is None else _no_control_chars(v, "recipe")

    @field_validator("extra_args")
    @classmethod
    def _items(cls, v: list[str]) -> list[str]:
        return _argv_items(v)


class ModelSettings(Strict):
    """How `dgxcluster model` moves weights: pull on the head, copy node to node."""

    pull_timeout_s: Seconds = 6 * 3600.0
    sync_timeout_s: Seconds = 6 * 3600.0
    idle_timeout_s: Seconds = Field(
        default=60.0, description="a copy making no progress this long drops that peer"
    )


class SecretsSettings(Strict):
    """Names of secrets and where to find values. The inventory never holds a value."""

    env: list[Annotated[str, Field(pattern=ENV_NAME_RE)]] = Field(
        default_factory=lambda: ["HF_TOKEN"]
    )
    file: Path | None = Field(default=None, description="KEY=VALUE file, mode 0600")


class InventoryModel(Strict):
    """The whole inventory file."""

    cluster: Name = "dgx"
    head: Name | None = None
    nodes: list[NodeSpec] = Field(min_length=1)
    ssh: SshSettings = Field(default_factory=SshSettings)
    fabric: FabricSettings = Field(default_factory=FabricSettings)
    image: ImageSettings = Field(default_factory=ImageSettings)
    container: ContainerSettings = Field(default_factory=ContainerSettings)
    ray: RaySettings = Field(default_factory=RaySettings)
    serve: ServeSettings = Field(default_factory=ServeSettings)
    model: ModelSettings = Field(default_factory=ModelSettings)
    secrets: SecretsSettings = Field(default_factory=SecretsSettings)
    state_dir: str = Field(
        default="~/.local/state/dgxcluster",
        min_length=1,
        max_length=1024,
        description="per-node directory for env-files, logs and records (on each node)",
    )

    @field_validator("state_dir")
    @classmethod
    def _state_dir(cls, v: str) -> str:
        return _node_path(v, "state_dir")

    @model_validator(mode="after")
    def _cross_checks(self) -> InventoryModel:
        errors = self._node_problems()
        names = {n.name for n in self.nodes}
        if self.head is not None and self.head not in names:
            errors.append((("head",), f"names no node: {self.head!r} "
                           f"(nodes: {', '.join(dict.fromkeys(n.name for n in self.nodes))})"))
        if self.image.build_node is not None and self.image.build_node not in names:
            errors.append((("image", "build_node"), f"names no node: {self.image.build_node!r}"))
        secret_names = set(self.secrets.env)
        for section, mapping in ((("container", "env"), self.container.env),
                                 (("fabric", "nccl_env"), self.fabric.nccl_env),
                                 (("image", "build_args"), self.image.build_args)):
            for key in mapping:
                if key in secret_names:
                    errors.append(((*section, key), f"{key} is listed in secrets.env, so its value "
                                   f"must not be here: {_secret_hint(key)}"))
        login = self.image.login
        if login is not None and login.password_secret in secret_names:
            errors.append((("image", "login", "password_secret"),
                           f"{login.password_secret} is listed in secrets.env, so it would also "
                           "reach every container's env-file: leave it out of secrets.env (the "
                           "pull reads it from the environment or secrets.file by itself)"))
        ray_arg = self.image.build_args.get(RAY_VERSION_ARG)
        if ray_arg is not None and ray_arg != self.ray.version:
            errors.append((("image", "build_args", RAY_VERSION_ARG),
                           f"{ray_arg} differs from ray.version {self.ray.version}: set ray.version "
                           f"only (build passes it as {RAY_VERSION_ARG})"))
        errors += crosschecks.jump_problems(self) + crosschecks.port_problems(self)
        fabric = topology.problems(self)
        errors += fabric
        if not fabric:  # placement reads the topology (ring order)
            errors += placement.problems(self)
        errors += self._serve_host_check()
        if errors:
            raise CrossCheckError(errors)
        return self

    def _node_problems(self) -> list[tuple[tuple[str | int, ...], str]]:
        """Duplicate names, addresses and fabric IPs; rail_ips that do not fit fabric.rails."""
        errors: list[tuple[tuple[str | int, ...], str]] = []
        seen: dict[str, dict[object, int]] = {"name": {}, "host": {}, "fabric_ip": {}}
        for i, node in enumerate(self.nodes):
            for key, value, shown in (("name", node.name, f"node name {node.name!r}"),
                                      ("host", (node.host, node.port),
                                       f"address {node.host}:{node.port}"),
                                      ("fabric_ip", node.fabric_ip, f"fabric_ip {node.fabric_ip}")):
                if value in seen[key]:
                    errors.append((("nodes", i, key),
                                   f"duplicate {shown} (also nodes[{seen[key][value]}])"))
                seen[key].setdefault(value, i)
            if node.rail_ips is None:
                continue
            rails, where = ((node.rails, f"nodes[{i}].rails") if node.rails is not None
                            else (self.fabric.rails, "fabric.rails"))
            if len(node.rail_ips) != len(rails):
                errors.append((("nodes", i, "rail_ips"),
                               f"has {len(node.rail_ips)} address(es) but {where} has "
                               f"{len(rails)}"))
            elif node.rail_ips[0] != node.fabric_ip:
                errors.append((("nodes", i, "rail_ips"), "first rail address must equal fabric_ip"))
        return errors

    @property
    def build_args(self) -> dict[str, str]:
        """What `build` passes to the image build: RAY_VERSION from ray.version (so the Ray the
        containers run is the one the inventory names), then image.build_args."""
        return {RAY_VERSION_ARG: self.ray.version, **self.image.build_args}

    def jump_hops(self, name: str) -> tuple[JumpHop, ...] | None:
        """The jump hosts the inventory sets for node `name` (see crosschecks.jump_hops)."""
        return crosschecks.jump_hops(self, name)

    @property
    def gpus_per_node(self) -> int:
        """GPUs Ray sees on each node: one per DGX Spark unless ray.num_gpus says otherwise."""
        return 1 if self.ray.num_gpus is None else self.ray.num_gpus

    def parallel_problem(self) -> str | None:
        """Why serve's TP x PP x DP cannot be placed on the serving nodes, or None
        (inventory/placement.py; `start` asks it with default sizes too)."""
        return placement.problem(self)

    def _serve_host_check(self) -> list[tuple[tuple[str | int, ...], str]]:
        """An IPv4 `serve.host` cannot answer on the head's IPv6 address (vLLM opens an IPv6
        socket only for an IPv6 --host); left unset, it adapts (core.endpoint.listen_host)."""
        head = self.head or self.nodes[0].name
        hosts = [n.host for n in self.nodes if n.name == head]
        if "host" not in self.serve.model_fields_set or not hosts:
            return []
        if _ip_version(hosts[0]) == 6 and _ip_version(self.serve.host) == 4:
            return [(("serve", "host"), f"{self.serve.host} listens on IPv4 only, but the head "
                     f"is reached at {hosts[0]} (IPv6): use '::' (every address), or leave "
                     "serve.host out")]
        return []

    @property
    def head_name(self) -> str:
        return self.head or self.nodes[0].name

    @property
    def head_node(self) -> NodeSpec:
        return self.node(self.head_name)

    def node(self, name: str) -> NodeSpec:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)

    @property
    def names(self) -> list[str]:
        return [n.name for n in self.nodes]

    def subnet_of(self, rail: int, node: NodeSpec) -> IPv4Interface:
        return IPv4Interface(f"{node.rail_addresses[rail]}/{self.fabric.prefix_length}")


class CrossCheckError(ValueError):
    """Several cross-field problems, each with its own key path."""

    def __init__(self, errors: list[tuple[tuple[str | int, ...], str]]) -> None:
        self.errors = errors
        super().__init__("; ".join(m for _, m in errors))
