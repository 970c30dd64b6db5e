"""Small helpers to run host commands (the testbed runs as root on the host)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Sequence

APT_PACKAGES = {
    "sshd": "openssh-server",
    "ssh-keygen": "openssh-client",
    "ip": "iproute2",
    "iptables": "iptables",
    "nsenter": "util-linux",
    "dockerd": "docker.io",
    "mmdebstrap": "mmdebstrap",
    "pdsh": "pdsh",
}


def run(argv: Sequence[str], check: bool = True, input: str | None = None,
        capture: bool = True, timeout: float | None = 120) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(list(argv), input=input, text=True, capture_output=capture,
                          timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise TestbedError(f"`{' '.join(argv)}` exited {proc.returncode}: "
                           f"{(proc.stderr or proc.stdout or '').strip()}")
    return proc


def ok(argv: Sequence[str]) -> bool:
    return subprocess.run(list(argv), capture_output=True, check=False).returncode == 0


class TestbedError(Exception):
    pass


def ensure_tools(tools: Sequence[str]) -> None:
    """Install missing tools from Debian packages (apt), once."""
    missing = [t for t in tools if not _have(t)]
    if not missing:
        return
    pkgs = sorted({APT_PACKAGES[t] for t in missing})
    print(f"testbed: installing {' '.join(pkgs)} (apt)", file=sys.stderr)
    env_prefix = ["env", "DEBIAN_FRONTEND=noninteractive"]
    run([*env_prefix, "apt-get", "update", "-qq"], timeout=600)
    run([*env_prefix, "apt-get", "install", "-y", "-qq", "--no-install-recommends", *pkgs],
        timeout=1200)


def _have(tool: str) -> bool:
    if tool == "sshd":
        return shutil.which("sshd") is not None or shutil.which("/usr/sbin/sshd") is not None
    return shutil.which(tool) is not None
