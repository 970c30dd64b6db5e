"""Where dgxcluster keeps its files on each node (under inventory `state_dir`): every node
path any capability uses is named here.

Remote paths may start with `~`, which only the node can expand: `NodePaths.resolve` asks
the node for $HOME once and gives absolute paths (docker -v needs them). Scripts that expand
`~` themselves take `NodePaths.unresolved(...)` paths (`~/...`), and those that `cd "$HOME"`
first take `home_relative(...)` ones; both save the round trip.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath

from dgxcluster.remote.connection import Connection

#: The layout under `<state_dir>/<cluster>` on every node.
ENV_DIR = "env"  # 0700: the 0600 env-files that carry secrets into containers
LOG_DIR = "logs"  # mounted into the Ray containers at /var/log/dgxcluster
RECORDS_DIR = "records"  # JSON records of what dgxcluster did (images built, models verified)
BIN_DIR = "bin"  # node-side helpers, content-addressed names
TMP_DIR = "tmp"
BUILD_DIR = "build"  # per image: the build context copy and its manifest
VERIFY_DIR = "verify"  # verify-ib's probe
#: The files `start`'s vLLM launcher keeps in LOG_DIR (also seen in the head container).
VLLM_LOG = "vllm.log"
VLLM_PID = "vllm.pid"
VLLM_EXIT = "vllm.exit"
#: The head's watcher (`serve.restart: on-failure`) in LOG_DIR: its pid, its state (one JSON
#: line, read by `status`), its restart records (JSON lines, collected by `logs`), its output.
SUPERVISOR_PID = "supervisor.pid"
SUPERVISOR_STATE = "supervisor.json"
SUPERVISOR_RECORDS = "restarts.jsonl"
SUPERVISOR_LOG = "supervisor.log"
SUPERVISOR_CONFIG = "supervisor-config.json"
#: `serve.persist`: the node's boot plan (under the root; read by `nodeside/boot.py`, which
#: the systemd unit runs at boot) and what that run printed (LOG_DIR, collected by `logs`).
BOOT_PLAN = "boot-plan.json"
BOOT_LOG = "boot.log"


def remote_home(conn: Connection) -> str:
    res = conn.run(["sh", "-c", 'printf %s "$HOME"']).check()
    home = res.stdout.strip()
    if not home.startswith("/"):
        from dgxcluster.errors import StepError

        raise StepError("resolve-home", f"node reported HOME={home!r}", node=conn.node)
    return home


def expand(path: str, home: str) -> str:
    if path == "~":
        return home
    if path.startswith("~/"):
        return str(PurePosixPath(home) / path[2:])
    return path


def image_slug(image: str) -> str:
    """`dgxcluster/vllm-gb10` -> `dgxcluster_vllm-gb10` (one directory or file per image)."""
    return image.replace("/", "_")


def home_relative_root(state_dir: str, cluster: str) -> PurePosixPath:
    """`NodePaths.root` without asking the node for $HOME: under `~` it is given relative to
    $HOME (scripts using it `cd "$HOME"` first), which saves a round trip."""
    base = state_dir[2:] if state_dir.startswith("~/") else ("." if state_dir == "~" else state_dir)
    return PurePosixPath(base) / cluster


def home_relative(state_dir: str, cluster: str, *parts: str) -> str:
    """A path below the root, relative to $HOME when under `~` (see `home_relative_root`)."""
    return str(home_relative_root(state_dir, cluster).joinpath(*parts))


@dataclass(frozen=True)
class NodePaths:
    """Absolute paths on one node for one cluster."""

    home: str
    state_dir: str
    cluster: str

    @classmethod
    def resolve(cls, conn: Connection, state_dir: str, cluster: str) -> NodePaths:
        return cls(remote_home(conn), state_dir, cluster)

    @classmethod
    def unresolved(cls, state_dir: str, cluster: str) -> NodePaths:
        """Paths under `~` left as `~/...`, for scripts that expand `~` themselves."""
        return cls("~", state_dir, cluster)

    @property
    def root(self) -> str:
        """<state_dir>/<cluster>: everything this cluster's runs leave on the node."""
        return str(PurePosixPath(expand(self.state_dir, self.home)) / self.cluster)

    def sub(self, *parts: str) -> str:
        return str(PurePosixPath(self.root, *parts))

    @property
    def env_dir(self) -> str:
        """0700 directory of 0600 env-files (secrets); removed by stop."""
        return self.sub(ENV_DIR)

    def build_secrets_dir(self, image: str, nonce: str) -> str:
        """`env/build-<image slug>-<nonce>`: one build's secret files (mounted by BuildKit,
        removed when the build ends); the slug says whose it is if one is ever left."""
        return self.sub(ENV_DIR, f"build-{image_slug(image)}-{nonce}")

    def env_file(self, name: str) -> str:
        """`env/<name>.env`: a role's (head, worker) or a one-off's (model-pull-<hex>)."""
        return self.sub(ENV_DIR, f"{name}.env")

    @property
    def log_dir(self) -> str:
        """Logs dgxcluster writes on the node (mounted into containers at /var/log/dgxcluster)."""
        return self.sub(LOG_DIR)

    @property
    def vllm_log(self) -> str:
        return self.sub(LOG_DIR, VLLM_LOG)

    @property
    def boot_plan(self) -> str:
        """`serve.persist`: what the node's systemd unit runs at boot (`serving/persist.py`)."""
        return self.sub(BOOT_PLAN)

    @property
    def boot_log(self) -> str:
        return self.sub(LOG_DIR, BOOT_LOG)

    @property
    def records_dir(self) -> str:
        """JSON records of what dgxcluster did (e.g. the last image built)."""
        return self.sub(RECORDS_DIR)

    def image_record(self, image: str) -> str:
        """What `build` left for `image`: its content tag, ID and how it got here."""
        return self.sub(RECORDS_DIR, f"image-{image_slug(image)}.json")

    @property
    def model_records_dir(self) -> str:
        """The model agent's verification records (one per blob hashed)."""
        return self.sub(RECORDS_DIR, "models")

    def bin_file(self, name: str) -> str:
        """A node-side helper; `name` carries its content hash, so an old copy is never run."""
        return self.sub(BIN_DIR, name)

    @property
    def tmp_dir(self) -> str:
        return self.sub(TMP_DIR)

    def tmp_file(self, name: str) -> str:
        return self.sub(TMP_DIR, name)

    def build_dir(self, image: str) -> str:
        """`build/<image slug>`: the node's copy of the build context (`context/`) and its
        manifest; `build_subdir` is the same below `root`."""
        return self.sub(build_subdir(image))

    @property
    def verify_dir(self) -> str:
        return self.sub(VERIFY_DIR)

    def expand(self, path: str) -> str:
        return expand(path, self.home)


def build_subdir(image: str) -> str:
    """`build/<image slug>`, relative to the root (for scripts given the root)."""
    return f"{BUILD_DIR}/{image_slug(image)}"
