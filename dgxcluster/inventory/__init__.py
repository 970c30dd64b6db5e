"""The inventory: pure models plus loading. Imports nothing that touches the network."""

from dgxcluster.inventory.load import Inventory, load_inventory, parse_inventory, resolve_path
from dgxcluster.inventory.schema import (
    ContainerSettings,
    FabricSettings,
    ImageSettings,
    NodeSpec,
    Rail,
    RaySettings,
    SecretsSettings,
    ServeSettings,
    SshSettings,
)

__all__ = [
    "ContainerSettings",
    "FabricSettings",
    "ImageSettings",
    "Inventory",
    "NodeSpec",
    "Rail",
    "RaySettings",
    "SecretsSettings",
    "ServeSettings",
    "SshSettings",
    "load_inventory",
    "parse_inventory",
    "resolve_path",
]
