"""Helpers for the `logs`/`status` end-to-end tests: labelled containers started by hand.

Until `start` exists on a branch, these tests run dgxcluster-labelled containers made with
plain `docker run` on the testbed's base image, carrying planted secrets: what `logs` and
`status` must find, and what `logs` must never let through.
"""

from __future__ import annotations

import json
import tarfile
import time
from pathlib import Path

from tests.conftest import Testbed

BASE_IMAGE = "dgxcluster/testbed-base:bookworm"
#: Planted secrets: an HF-shaped token, a secret-named variable, and an inventory-named one.
TOKEN = "hf_" + "PlantedToken0" * 3
API_KEY = "plain-api-key-value-7731"

# Runs in each container: Ray-like session logs holding the token, then a log line per
# second (for --follow), echoing the token once into `docker logs`.
CONTAINER_SCRIPT = r"""
mkdir -p /tmp/ray/session_2026/logs
ln -sfn /tmp/ray/session_2026 /tmp/ray/session_latest
printf 'raylet started\nenv HF_TOKEN=%s\n' "$HF_TOKEN" > /tmp/ray/session_2026/logs/raylet.out
echo "gcs ok" > /tmp/ray/session_2026/logs/gcs_server.out
echo "container up; token is $HF_TOKEN and key WANDB_API_KEY=$WANDB_API_KEY"
i=0
while true; do i=$((i + 1)); echo "tick $i"; sleep 1; done
"""


def remove_cluster_containers(tb: Testbed, cluster: str) -> None:
    for node in tb.nodes:
        tb.node_exec(node, "sh", "-c",
                     f'ids=$(docker ps -aq --filter label=dgxcluster.cluster={cluster}); '
                     '[ -z "$ids" ] || docker rm -f $ids >/dev/null', check=False)


def start_labelled(tb: Testbed, node: str, cluster: str, role: str) -> str:
    """A container labelled as dgxcluster's, started with secrets in an --env-file."""
    name = f"dgxc-{cluster}-{role}"
    env = f"HF_TOKEN={TOKEN}\nWANDB_API_KEY={API_KEY}\n"
    tb.node_exec(node, "sh", "-c", 'umask 077; mkdir -p /root/planted; printf %s "$1" '
                 "> /root/planted/test.env", "sh", env)
    tb.node_exec(
        node, "docker", "run", "-d", "--name", name,
        "--label", f"dgxcluster.cluster={cluster}", "--label", f"dgxcluster.role={role}",
        "--label", f"dgxcluster.node={node}", "--label", "dgxcluster.config=handmade",
        "--env-file", "/root/planted/test.env", BASE_IMAGE, "sh", "-c", CONTAINER_SCRIPT,
    )
    return name


def wait_set_up(tb: Testbed, node: str, name: str, timeout: float = 120.0) -> None:
    """Until the container printed "container up" (CONTAINER_SCRIPT prints it once its setup
    files are written): a condition, not a guess at how long that takes."""
    deadline = time.monotonic() + timeout
    while "container up" not in tb.node_exec(node, "docker", "logs", name, check=False).stdout:
        assert time.monotonic() < deadline, f"{node}: {name} never printed 'container up'"
        time.sleep(0.2)


def plant_server_log(tb: Testbed, node: str, cluster: str) -> str:
    """A vLLM-like server log in dgxcluster's log folder on the node, leaking the token."""
    path = f"/root/.local/state/dgxcluster/{cluster}/logs/vllm-serve.log"
    text = (f"INFO non-default args: {{'model': 'Qwen/Qwen3-8B', 'hf_token': '{TOKEN}'}}\n"
            "INFO Started server process\n")
    tb.node_exec(node, "sh", "-c", 'mkdir -p "$(dirname "$1")" && printf %s "$2" > "$1"',
                 "sh", path, text)
    return path


def bundle_from(stdout: str) -> tuple[Path, Path]:
    folder = archive = None
    for line in stdout.splitlines():
        if line.startswith("bundle:"):
            folder = Path(line.split(":", 1)[1].strip())
        if line.startswith("archive:"):
            archive = Path(line.split(":", 1)[1].strip())
    assert folder is not None and archive is not None, stdout
    return folder, archive


def manifest(folder: Path) -> dict[str, object]:
    return json.loads((folder / "manifest.json").read_text())  # type: ignore[no-any-return]


def every_byte(folder: Path, archive: Path) -> list[tuple[str, bytes]]:
    """Every file of the bundle folder and every member of the archive."""
    out = [(str(p), p.read_bytes()) for p in folder.rglob("*") if p.is_file()]
    with tarfile.open(archive) as tar:
        for m in tar.getmembers():
            f = tar.extractfile(m)
            if f is not None:
                out.append((f"{archive}:{m.name}", f.read()))
    return out
