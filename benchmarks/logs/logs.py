"""`dgxcluster logs` on 16 testbed nodes against the slowest single node's collection.

Target: collecting from all 16 nodes at once takes <= 1.3x the slowest node collected on
its own (`logs --node NODE`), i.e. nodes do not wait for each other. The testbed's nodes
share this machine's CPUs, so the node-side work of 16 nodes competes for them; the
within-run figure (wall time against the slowest node's own duration in the manifest)
separates that from the tool's own overhead.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import PY, median, report, testbed_down, testbed_up, timed
from observe_setup import LINES, RAY_LINES, node_names, populate


def cpu_busy() -> float:
    """Machine-wide busy CPU seconds so far (/proc/stat): every process, the nodes' included."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def timed_cpu(argv: list[str]) -> tuple[float, float]:
    c0 = cpu_busy()
    wall = timed(argv)
    return wall, cpu_busy() - c0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nodes", type=int, default=16)
    ap.add_argument("--name", default="blogs", help="testbed name (reused if it is up)")
    ap.add_argument("--runs", type=int, default=3)
    a = ap.parse_args()
    name = a.name
    inv = testbed_up(name, a.nodes, docker=True)
    out = Path(tempfile.mkdtemp(prefix="dgxc-bench-logs-"))
    try:
        nodes = node_names(inv)
        populate(name, name, nodes)
        base = [PY, "-m", "dgxcluster", "-i", str(inv), "logs", "-o", str(out)]
        timed(base)  # warm caches once
        single_cpu: dict[str, float] = {}
        singles: dict[str, float] = {}
        for n in nodes:
            singles[n], single_cpu[n] = timed_cpu(base + ["--node", n])
        alls, inner, all_cpu = [], [], []
        for _ in range(a.runs):
            wall, cpu = timed_cpu(base)
            alls.append(wall)
            all_cpu.append(cpu)
            newest = max(out.glob("*/manifest.json"), key=lambda p: p.stat().st_mtime)
            doc = json.loads(newest.read_text())
            inner.append(max(r["duration_s"] for r in doc["nodes"].values()))
        slowest = max(singles, key=lambda n: singles[n])
        size = sum(f.stat().st_size for f in newest.parent.rglob("*") if f.is_file())
        print(f"logs over {a.nodes} testbed nodes; per node: a labelled container with "
              f"{LINES} log lines and 4 Ray-like log files of {RAY_LINES} lines, plus a "
              f"20000-line server log; last bundle {size / 1e6:.1f} MB")
        print(f"single-node collections (logs --node N): min {min(singles.values()):.3f} s, "
              f"median {median(list(singles.values())):.3f} s, slowest {singles[slowest]:.3f} s "
              f"({slowest})")
        report("whole command, wall time", [
            (f"logs --node {slowest} (slowest alone)", singles[slowest]),
            (f"logs on all {a.nodes} nodes (median of {a.runs})", median(alls)),
        ], f"logs --node {slowest} (slowest alone)")
        report("inside the 16-node run (manifest durations)", [
            ("slowest node's own collection", median(inner)),
            ("whole 16-node command", median(alls)),
        ], "slowest node's own collection")
        cores = os.cpu_count() or 1
        print(f"\nCPU (machine-wide busy seconds, /proc/stat, {cores} cores; other work on the "
              "machine included):")
        print(f"  one node collected alone: median {median(list(single_cpu.values())):.2f} s busy")
        print(f"  all {a.nodes} nodes: median {median(all_cpu):.2f} s busy in "
              f"{median(alls):.2f} s wall = {median(all_cpu) / median(alls):.2f} of {cores} cores")
        print("\ntarget: all nodes / slowest single node <= 1.3")
    finally:
        shutil.rmtree(out, ignore_errors=True)
        testbed_down(name)


if __name__ == "__main__":
    main()
