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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nodes", type=int, default=16)
    ap.add_argument("--runs", type=int, default=5)
    a = ap.parse_args()
    name = "bstat"
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
        timed(pdsh, env)  # warm caches once each
        timed(status)
        t_pdsh, t_status = [], []
        for _ in range(a.runs):
            t_pdsh.append(timed(pdsh, env))
            t_status.append(timed(status))
        print(f"status over {a.nodes} testbed nodes (each running one labelled container), "
              f"{a.runs} alternating runs each (median wall)")
        report("one round on every node", [
            ("pdsh -R ssh ... hostname", median(t_pdsh)),
            ("dgxcluster status --json", median(t_status)),
        ], "pdsh -R ssh ... hostname")
        print(f"  (all runs: pdsh {', '.join(f'{x:.2f}' for x in t_pdsh)}; "
              f"status {', '.join(f'{x:.2f}' for x in t_status)})")
        print("\ntarget: status / pdsh round <= 1.3")
    finally:
        testbed_down(name)


if __name__ == "__main__":
    main()
