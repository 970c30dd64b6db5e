"""Shared set-up for the logs and status benchmarks: a docker testbed whose every node runs a
dgxcluster-labelled container (started by hand on the base image) with some logs to collect.

Per node: the container prints LINES log lines, keeps Ray-like session logs (4 files of
RAY_LINES lines), and the node holds a vLLM-like server log (20000 lines) in dgxcluster's
log folder. Text like real logs, so it compresses like real logs.
"""

from __future__ import annotations

import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from common import TESTBED

BASE_IMAGE = "dgxcluster/testbed-base:bookworm"
LINES = 5000
RAY_LINES = 5000

CONTAINER = r"""
mkdir -p /tmp/ray/session_bench/logs && ln -sfn /tmp/ray/session_bench /tmp/ray/session_latest
for f in raylet.out gcs_server.out dashboard.log worker-1.out; do
  i=0; while [ $i -lt $2 ]; do i=$((i+1))
    echo "[2026-11-22 12:00:00,$i I 17 17] ($f) node_manager.cc:$i: heartbeat $i from node $((i % 16)) ok"
  done > /tmp/ray/session_bench/logs/$f
done
i=0; while [ $i -lt $1 ]; do i=$((i+1)); echo "INFO step $i: all good on this node"; done
exec sleep infinity
"""


def node_exec(name: str, node: str, *argv: str) -> None:
    subprocess.run([str(TESTBED), "--name", name, "exec", node, "--", *argv], check=True,
                   capture_output=True, text=True, timeout=300)


def populate(name: str, cluster: str, nodes: list[str]) -> None:
    def one(node: str) -> None:
        role = "head" if node == "node1" else "worker"
        node_exec(name, node, "sh", "-c", f"docker rm -f dgxc-{cluster}-{role} >/dev/null 2>&1; true")
        node_exec(name, node, "docker", "run", "-d", "--name", f"dgxc-{cluster}-{role}",
                  "--label", f"dgxcluster.cluster={cluster}", "--label", f"dgxcluster.role={role}",
                  "--label", f"dgxcluster.node={node}", BASE_IMAGE, "sh", "-c", CONTAINER, "sh",
                  str(LINES), str(RAY_LINES))
        log = f"/root/.local/state/dgxcluster/{cluster}/logs/vllm-serve.log"
        node_exec(name, node, "sh", "-c",
                  'mkdir -p "$(dirname "$1")"; seq 1 20000 | sed "s/^/INFO engine step /" > "$1"',
                  "sh", log)

    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(one, nodes))


def node_names(inv: Path) -> list[str]:
    return [ln.split(":", 1)[1].strip() for ln in inv.read_text().splitlines()
            if ln.strip().startswith("- name:")]
