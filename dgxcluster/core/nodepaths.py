"""Where dgxcluster keeps its files on each node (under inventory `state_dir`).

Remote paths may start with `~`, which only the node can expand: `NodePaths.resolve`
asks the node for $HOME once and gives absolute paths (docker -v needs them).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath

from dgxcluster.remote.connection import Connection


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


@dataclass(frozen=True)
class NodePaths:
    """Absolute paths on one node for one cluster."""

    home: str
    state_dir: str
    cluster: str

    @classmethod
    def resolve(cls, conn: Connection, state_dir: str, cluster: str) -> NodePaths:
        return cls(remote_home(conn), state_dir, cluster)

    @property
    def root(self) -> str:
        """<state_dir>/<cluster>: everything this cluster's runs leave on the node."""
        return str(PurePosixPath(expand(self.state_dir, self.home)) / self.cluster)

    def sub(self, *parts: str) -> str:
        return str(PurePosixPath(self.root, *parts))

    @property
    def env_dir(self) -> str:
        """0700 directory of 0600 env-files (secrets); removed by stop."""
        return self.sub("env")

    def env_file(self, role: str) -> str:
        return self.sub("env", f"{role}.env")

    @property
    def log_dir(self) -> str:
        """Logs dgxcluster writes on the node (mounted into containers at /var/log/dgxcluster)."""
        return self.sub("logs")

    @property
    def lock_file(self) -> str:
        return self.sub("lock")

    @property
    def records_dir(self) -> str:
        """JSON records of what dgxcluster did (e.g. the last image built)."""
        return self.sub("records")

    def expand(self, path: str) -> str:
        return expand(path, self.home)
