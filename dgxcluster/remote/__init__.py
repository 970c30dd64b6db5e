"""The remote layer: the only code that talks to nodes. Only `ssh.py` imports Fabric/paramiko.

Capabilities use `Cluster` (fan-out over per-node `Connection`s) and build argv lists;
quoting and secret masking happen once, in `command.py`.
"""

from dgxcluster.remote.command import Arg, Argv, for_display, shell, to_command_line, with_env
from dgxcluster.remote.connection import Connection
from dgxcluster.remote.group import Cluster, ConnectionFactory
from dgxcluster.remote.result import GroupResult, Result

__all__ = [
    "Arg",
    "Argv",
    "Cluster",
    "Connection",
    "ConnectionFactory",
    "GroupResult",
    "Result",
    "for_display",
    "shell",
    "to_command_line",
    "with_env",
]
