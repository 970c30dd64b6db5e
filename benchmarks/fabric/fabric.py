"""`dgxcluster verify-ib` and `dgxcluster status` on 2, 4 and 8 testbed nodes against one pdsh
round on the same nodes, in the same run.

A docker testbed of 8 nodes, cabled as --topology says (switch: every pair pinged; ring:
each cable of the closed ring, on its own /24), every node with simulated hardware that
follows the cabling (`--simhw auto`) and one dgxcluster-labelled container
(observe_setup.populate). On a switch the 2- and 4-node figures use inventories of the first
N nodes of the 8; a ring of N is cabled differently, so each N is its own testbed. Runs
alternate pdsh, verify-ib and status, so all see the same machine state; medians are
printed, with ratios against the pdsh round. dgxcluster runs cold (a new process imports
everything) and warm (forked from a `dgxcluster warm` server that has imported it; SSH
connections are as new as pdsh's). Every verify-ib run must PASS everything but
container-rdma (the testbed inventory leaves the DGX container options out), so a failing
run is not mistaken for a fast one. Goal (issue 15): status within 1.3x of one pdsh round
at any N.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import COLD, PY, REPO, TESTBED, median, report, subset, testbed_down, warm_server
from observe_setup import node_names, populate

PDSH = "pdsh -R ssh ... hostname"


def up(name: str, n: int, topology: str) -> Path:
    subprocess.run([str(TESTBED), "--name", name, "up", str(n), "--docker", "--topology",
                    topology, "--simhw", "auto"], check=True, capture_output=True, text=True,
                   timeout=1800)
    return REPO / "inventory" / f"testbed-{name}.yaml"



def pdsh_round(inv: Path) -> tuple[list[str], dict[str, str]]:
    doc = yaml.safe_load(inv.read_text())
    hosts = [n["host"] for n in doc["nodes"]]
    env = dict(os.environ)
    env["PDSH_SSH_ARGS"] = (f"-2 -a -x -l%u %h -i {doc['ssh']['identity_file']} "
                            f"-o UserKnownHostsFile={inv.parent / doc['ssh']['known_hosts']} "
                            "-o StrictHostKeyChecking=yes -o BatchMode=yes")
    return ["pdsh", "-R", "ssh", "-l", "root", "-w", ",".join(hosts), "hostname"], env


def run(argv: list[str], env: dict[str, str] | None = None, ok: tuple[int, ...] = (0,),
        ) -> tuple[float, str]:
    t0 = time.perf_counter()
    p = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
    dt = time.perf_counter() - t0
    if p.returncode not in ok:
        sys.exit(f"benchmark command failed ({p.returncode}): {' '.join(argv)}\n{p.stderr}")
    return dt, p.stdout


def checked_verify(argv: list[str], env: dict[str, str]) -> float:
    """verify-ib's wall time; exits if anything but container-rdma (the testbed inventory
    leaves the DGX container options out) and oom-guard (the testbed's nodes run no
    earlyoom/systemd-oomd: a WARN) did not PASS."""
    dt, out = run(argv, env, ok=(0, 1))
    bad = [(r["node"], r["check"]) for r in json.loads(out)
           if r["status"] != "PASS" and r["check"] not in ("container-rdma", "oom-guard")]
    if bad:
        sys.exit(f"verify-ib did not pass: {bad}")
    return dt


def measure(inv: Path, n: int, runs: int, warm: dict[str, str]) -> dict[str, float]:
    pdsh, env = pdsh_round(inv)
    cli = [PY, "-m", "dgxcluster", "-i", str(inv)]
    verify, status = [*cli, "verify-ib", "--json"], [*cli, "status", "--json"]
    run(pdsh, env)  # warm caches once each
    for how in (COLD, warm):
        checked_verify(verify, how)
        run(status, how)
    t: dict[str, list[float]] = {PDSH: []}
    for _ in range(runs):
        t[PDSH].append(run(pdsh, env)[0])
        for label, how in (("cold", COLD), ("warm", warm)):
            t.setdefault(f"dgxcluster status --json ({label})", []).append(run(status, how)[0])
            t.setdefault(f"dgxcluster verify-ib --json ({label})", []).append(
                checked_verify(verify, how))
    meds = {k: median(v) for k, v in t.items()}
    report(f"{n} nodes", list(meds.items()), PDSH)
    for k, v in t.items():
        print(f"  ({k}: {', '.join(f'{x:.2f}' for x in v)})")
    return meds


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--name", default="fabb", help="testbed name (reused if it is up)")
    ap.add_argument("--topology", choices=("switch", "ring"), default="switch")
    ap.add_argument("--sizes", default="2,4,8", help="node counts, comma-separated")
    ap.add_argument("--runs", type=int, default=5)
    a = ap.parse_args()
    sizes = [int(x) for x in a.sizes.split(",")]
    print(f"verify-ib and status vs one pdsh round, {a.topology} topology, {a.runs} "
          "alternating runs each (median wall, whole CLI including Python's start)")
    ratios = []
    big = up(a.name, max(sizes), a.topology) if a.topology == "switch" else None
    with contextlib.ExitStack() as stack:
        stack.callback(testbed_down, a.name)
        warm = stack.enter_context(warm_server())
        if big:
            populate(a.name, a.name, node_names(big))
        for n in sizes:
            if big:  # a switch's first n nodes are a switch of n
                inv = subset(big, n) if n != max(sizes) else big
            else:  # a ring of n nodes is cabled differently: its own testbed
                inv = up(f"{a.name}{n}", n, "ring")
                populate(f"{a.name}{n}", a.name + str(n), node_names(inv))
            try:
                m = measure(inv, n, a.runs, warm)
            finally:
                if not big:
                    testbed_down(f"{a.name}{n}")
            ratios.append((n, *(m[f"dgxcluster {c} --json ({h})"] / m[PDSH]
                                for c in ("status", "verify-ib") for h in ("cold", "warm"))))
        print("\nratios to one pdsh round (goal for status: <= 1.3), cold / warm: "
              + "; ".join(f"{n} nodes: status {sc:.2f} / {sw:.2f}, verify-ib {vc:.2f} / {vw:.2f}"
                          for n, sc, sw, vc, vw in ratios))


if __name__ == "__main__":
    main()
