"""Host key checking: strict by default, `accept-new` records unknown keys, changed keys are refused.

Never paramiko's auto-add policy: a DGX cluster is a fixed set of machines whose keys should
not change, and a changed key is exactly the case worth stopping for.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import threading
from pathlib import Path

import paramiko

from dgxcluster.errors import HostKeyError

_write_lock = threading.Lock()


def fingerprint(key: paramiko.PKey) -> str:
    """OpenSSH-style SHA256 fingerprint (what `ssh-keygen -lf` prints)."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def known_hosts_name(host: str, port: int) -> str:
    return host if port == 22 else f"[{host}]:{port}"


def load_known_hosts(client: paramiko.SSHClient, path: Path) -> None:
    """Load only the inventory's known_hosts file (not ~/.ssh/known_hosts implicitly)."""
    if path.exists():
        client.load_host_keys(str(path))


class StrictPolicy(paramiko.MissingHostKeyPolicy):
    """Refuse any host whose key is not already in known_hosts."""

    def __init__(self, node: str, known_hosts: Path, port: int, role: str = "node") -> None:
        self.node = node
        self.known_hosts = known_hosts
        self.port = port
        self.role = role

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        host = hostname.removeprefix("[").split("]")[0]
        raise HostKeyError(
            self.node,
            f"unknown host key for {hostname}: {key.get_name()} {fingerprint(key)} "
            f"is not in {self.known_hosts}",
            hint=(
                f"check the fingerprint on the {self.role} (ssh-keygen -lf /etc/ssh/ssh_host_*.pub), then "
                f"add it: ssh-keyscan -p {self.port} {host} >> {self.known_hosts} "
                "(or set ssh.host_key_policy: accept-new to record unknown keys on first use)"
            ),
        )


class AcceptNewPolicy(paramiko.MissingHostKeyPolicy):
    """Record a never-seen key in known_hosts (like OpenSSH's accept-new); changed keys still fail."""

    def __init__(self, node: str, known_hosts: Path) -> None:
        self.node = node
        self.known_hosts = known_hosts

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        line = f"{hostname} {key.get_name()} {key.get_base64()}\n"
        with _write_lock:
            self.known_hosts.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            with open(self.known_hosts, "a", encoding="utf-8") as fh:
                fcntl.flock(fh, fcntl.LOCK_EX)
                fh.write(line)
        client.get_host_keys().add(hostname, key.get_name(), key)


def policy_for(
    mode: str, node: str, known_hosts: Path, port: int, role: str = "node"
) -> paramiko.MissingHostKeyPolicy:
    """The one policy for every host dgxcluster connects to, jump hosts included."""
    if mode == "accept-new":
        return AcceptNewPolicy(node, known_hosts)
    return StrictPolicy(node, known_hosts, port, role)


def changed_key_error(
    node: str, exc: paramiko.BadHostKeyException, known_hosts: Path, port: int,
    role: str = "node",
) -> HostKeyError:
    host = exc.hostname.removeprefix("[").split("]")[0]
    return HostKeyError(
        node,
        f"HOST KEY CHANGED for {exc.hostname}: the {role} offered {exc.key.get_name()} "
        f"{fingerprint(exc.key)} but {known_hosts} has {fingerprint(exc.expected_key)}; "
        "refusing to connect (this can be a reinstall, or someone in the middle)",
        hint=(
            f"if the {role} was reinstalled, verify the new fingerprint, then run: "
            f"ssh-keygen -f {known_hosts} -R '{known_hosts_name(host, port)}' "
            f"and add the new key with ssh-keyscan -p {port} {host} >> {known_hosts}"
        ),
    )
