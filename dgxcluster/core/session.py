"""A `Session` is everything one invocation needs, passed explicitly (no global state).

It holds the validated inventory, the secrets and the redactor that hides them, the
per-invocation log directory, and the `Cluster` of reusable connections.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from dgxcluster.secrets import DEFAULT_SECRET_NAMES, Redactor, Secret, load_secrets

if TYPE_CHECKING:
    from dgxcluster.inventory.load import Inventory
    from dgxcluster.remote.group import Cluster, ConnectionFactory
    from dgxcluster.runlog import RunLogs


def inventory_secrets(inventory: Inventory, environ: Mapping[str, str] | None = None
                      ) -> dict[str, Secret]:
    """The secrets the inventory names (`secrets.env`, `serve.api_key`, HF_TOKEN), from the
    environment, else the secrets file; for commands that need them without a session
    (`smoke`)."""
    secrets_file = (
        inventory.local_path(inventory.secrets.file) if inventory.secrets.file else None
    )
    api_key = [inventory.serve.api_key] if inventory.serve.api_key else []
    names = list(dict.fromkeys([*inventory.secrets.env, *api_key, *DEFAULT_SECRET_NAMES]))
    return load_secrets(names, secrets_file, environ)


@dataclass
class Session:
    inventory: Inventory
    cluster: Cluster
    redactor: Redactor
    secrets: dict[str, Secret] = field(default_factory=dict)
    logs: RunLogs | None = None
    dry_run: bool = False

    @classmethod
    def open(
        cls,
        inventory: Inventory,
        *,
        command: str = "run",
        factory: ConnectionFactory | None = None,
        environ: Mapping[str, str] | None = None,
        log_dir: Path | None = None,
        redactor: Redactor | None = None,
    ) -> Session:
        from dgxcluster.remote.group import Cluster
        from dgxcluster.runlog import RunLogs

        red = redactor or Redactor()
        secrets = inventory_secrets(inventory, environ)
        red.add(*secrets.values())
        cluster = Cluster(inventory, factory=factory, redactor=red)
        logs = RunLogs.create(command, log_dir, red)
        return cls(inventory=inventory, cluster=cluster, redactor=red, secrets=secrets, logs=logs)

    def only(self, names: Sequence[str]) -> Session:
        """This session narrowed to `names` (inventory order kept), with its own connections:
        `start` runs on the serving nodes only, leaving the placement's idle nodes alone.
        The caller closes it."""
        inv = self.inventory.model_copy(
            update={"nodes": [n for n in self.inventory.nodes if n.name in names]})
        return replace(self, inventory=inv, cluster=self.cluster.narrowed(inv))

    def close(self) -> None:
        self.cluster.close()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
