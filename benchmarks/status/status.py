"""`dgxcluster status` on 16 testbed nodes against one pdsh round on the same nodes.

Target: status (one SSH round per node, running a script of three docker queries and
nvidia-smi, plus the HTTP check of the endpoint) <= 1.3x `pdsh -R ssh ... hostname`.
Runs alternate so both see the same machine state; each node runs a labelled container.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import PY, median, report, testbed_down, testbed_up, timed
from observe_setup import node_names, populate

NODE_SCRIPT = """
import sys, time
from dgxcluster.inventory import load_inventory
from dgxcluster.core.session import Session
from dgxcluster.status.probe import status_argv
inv = load_inventory(sys.argv[1])
with Session.open(inv, command="bench") as s:
    nodes = s.cluster.names if sys.argv[2] == "all" else s.cluster.names[:1]
    s.cluster.run(["true"], nodes)
    argv = status_argv(inv.image.name, inv.cluster, None)
    best = min(_timed(s, argv, nodes) for _ in range(3))
print(best)
"""
TIMED = """
def _timed(s, argv, nodes):
    t = time.perf_counter()
    s.cluster.run(argv, nodes).raise_for_failures("status script")
    return time.perf_counter() - t
"""


def node_script(inv: Path, every: bool = False) -> float:
    """Best of 3: the status script alone on one node or all nodes, connections open."""
    import subprocess

    code = NODE_SCRIPT.replace("inv = load_inventory", TIMED + "inv = load_inventory")
    out = subprocess.run([PY, "-c", code, str(inv), "all" if every else "one"], check=True,
                         capture_output=True, text=True).stdout
    return float(out.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nodes", type=int, default=16)
    ap.add_argument("--name", default="bstat", help="testbed name (reused if it is up)")
    ap.add_argument("--runs", type=int, default=5)
    a = ap.parse_args()
    name = a.name
    inv = testbed_up(name, a.nodes, docker=True)
    try:
        populate(name, name, node_names(inv))
        text = inv.read_text()
        hosts = [ln.split()[-1] for ln in text.splitlines() if ln.strip().startswith("host:")]
        key = next(ln.split()[-1] for ln in text.splitlines() if "identity_file:" in ln)
        kh = inv.with_suffix(".known_hosts")
        env = dict(os.environ)
        env["PDSH_SSH_ARGS"] = (f"-2 -a -x -l%u %h -i {key} -o UserKnownHostsFile={kh} "
                                "-o StrictHostKeyChecking=yes -o BatchMode=yes")
        pdsh = ["pdsh", "-R", "ssh", "-l", "root", "-w", ",".join(hosts), "hostname"]
        status = [PY, "-m", "dgxcluster", "-i", str(inv), "status", "--json"]
        exec_ = [PY, "-m", "dgxcluster", "-i", str(inv), "exec", "--", "hostname"]
        timed(pdsh, env)  # warm caches once each
        timed(status)
        t_pdsh, t_status, t_exec = [], [], []
        for _ in range(a.runs):
            t_pdsh.append(timed(pdsh, env))
            t_status.append(timed(status))
            t_exec.append(timed(exec_))
        print(f"status over {a.nodes} testbed nodes (each running one labelled container), "
              f"{a.runs} alternating runs each (median wall)")
        report("one round on every node", [
            ("pdsh -R ssh ... hostname", median(t_pdsh)),
            ("dgxcluster status --json", median(t_status)),
            ("dgxcluster exec -- hostname (reference)", median(t_exec)),
        ], "pdsh -R ssh ... hostname")
        print(f"  (all runs: pdsh {', '.join(f'{x:.2f}' for x in t_pdsh)}; "
              f"status {', '.join(f'{x:.2f}' for x in t_status)}; "
              f"exec {', '.join(f'{x:.2f}' for x in t_exec)})")
        print(f"  node script alone: {node_script(inv):.3f} s on one node, {node_script(inv, True):.3f}"
              f" s on all {a.nodes} at once (connections already open; the nodes share this "
              "machine's CPUs)")
        print("\ntarget: status / pdsh round <= 1.3")
    finally:
        testbed_down(name)


if __name__ == "__main__":
    main()
