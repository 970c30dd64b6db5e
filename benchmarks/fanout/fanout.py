"""`dgxcluster exec -- hostname` against pdsh (-R ssh) on the same 16 testbed nodes.

Runs alternate (5 each) so both see the same machine state. Also measures one invocation
that runs 5 commands per node over reused connections, against one pdsh round.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import PY, median, report, testbed_down, testbed_up, timed

FIVE = """
import sys
from dgxcluster.inventory import load_inventory
from dgxcluster.core.session import Session
inv = load_inventory(sys.argv[1])
with Session.open(inv, command="bench") as s:
    for cmd in (["hostname"], ["uname", "-r"], ["id", "-u"], ["true"], ["date", "+%s"]):
        s.cluster.run(cmd).raise_for_failures(cmd[0])
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nodes", type=int, default=16)
    ap.add_argument("--runs", type=int, default=5)
    a = ap.parse_args()
    name = "bfan"
    inv = testbed_up(name, a.nodes)
    try:
        text = inv.read_text()
        hosts = [ln.split()[-1] for ln in text.splitlines() if ln.strip().startswith("host:")]
        key = next(ln.split()[-1] for ln in text.splitlines() if "identity_file:" in ln)
        kh = inv.with_suffix(".known_hosts")
        env = dict(os.environ)
        env["PDSH_SSH_ARGS"] = (f"-2 -a -x -l%u %h -i {key} -o UserKnownHostsFile={kh} "
                                "-o StrictHostKeyChecking=yes -o BatchMode=yes")
        pdsh = ["pdsh", "-R", "ssh", "-l", "root", "-w", ",".join(hosts), "hostname"]
        dgx = [PY, "-m", "dgxcluster", "-i", str(inv), "exec", "--", "hostname"]
        five = [PY, "-c", FIVE, str(inv)]
        timed(pdsh, env)  # warm caches once each
        timed(dgx)
        t_pdsh, t_dgx, t_five = [], [], []
        for _ in range(a.runs):
            t_pdsh.append(timed(pdsh, env))
            t_dgx.append(timed(dgx))
            t_five.append(timed(five))
        print(f"fan-out over {a.nodes} testbed nodes, {a.runs} alternating runs each (median wall)")
        report("one command per node", [
            ("pdsh -R ssh ... hostname", median(t_pdsh)),
            ("dgxcluster exec -- hostname", median(t_dgx)),
        ], "pdsh -R ssh ... hostname")
        report("5 commands per node in one invocation (connections reused)", [
            ("pdsh -R ssh ... hostname (one round)", median(t_pdsh)),
            ("dgxcluster API, 5 commands x 16 nodes", median(t_five)),
        ], "pdsh -R ssh ... hostname (one round)")
        print("\ntargets: exec/pdsh <= 1.0; 5-command invocation/pdsh round <= 1.3")
    finally:
        testbed_down(name)


if __name__ == "__main__":
    main()
