"""One `status --watch` refresh on 2 and 8 testbed nodes against one pdsh round on the same nodes.

A refresh is what the live view does every SECONDS: one SSH round per node (status's script:
Docker's API, nvidia-smi, /proc/meminfo, and on the head Ray's dashboard and the vLLM
launcher's files) over the SSH connections the session keeps open between refreshes, and one
HTTP GET of rank 0's /metrics over a kept-alive connection. A pdsh round opens a new SSH
connection to every node and runs `hostname`. Target: refresh <= 1.3x the pdsh round.

Set-up: one docker testbed of 8 nodes. Every node runs a dgxcluster-labelled container
(observe_setup.populate) and simulated hardware (`nvidia-smi` replays a real GB10 capture);
the vLLM stand-in's HTTP API serves on node1:8000, the inventory's endpoint (tests/standin.py
run in node1's namespaces: no Ray, the same /metrics text). The 2-node figures use an
inventory of node1 and node2 of the same testbed. Each run alternates one refresh and one
pdsh round, so both see the same machine state; the medians are printed, and every refresh
is checked to have read every node and the metrics (a failing one would be measuring an
error path).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import PY, REPO, TESTBED, median, report, subset, testbed_down, testbed_up
from observe_setup import node_names, populate

TIMER = r"""
import json, subprocess, sys, time
from dgxcluster.inventory import load_inventory
from dgxcluster.core.session import Session
from dgxcluster.status.watch import Watch

inv = load_inventory(sys.argv[1])
runs, pdsh, env = int(sys.argv[2]), json.loads(sys.argv[3]), json.loads(sys.argv[4])
refresh, rounds = [], []
with Session.open(inv, command="bench") as s:
    w = Watch(s)
    for _ in range(2):  # connect and warm up
        w.refresh()
    for _ in range(runs):
        t = time.perf_counter()
        frame = w.refresh()
        refresh.append(time.perf_counter() - t)
        st = frame.status
        bad = [n.node for n in st.nodes if not n.reachable or n.error or not n.gpus or not n.memory]
        if bad or frame.late or st.serving is None:
            sys.exit(f"refresh did not read everything: nodes {bad}, late {frame.late}, "
                     f"metrics {st.serving_error}")
        t = time.perf_counter()
        subprocess.run(pdsh, env=env, check=True, capture_output=True)
        rounds.append(time.perf_counter() - t)
    w.close()
print(json.dumps({"refresh": refresh, "pdsh": rounds}))
"""


def tb(name: str, *args: str) -> None:
    subprocess.run([str(TESTBED), "--name", name, *args], check=True, capture_output=True,
                   text=True, timeout=600)



def serve_standin(name: str, inv: Path) -> subprocess.Popen[bytes]:
    doc = yaml.safe_load(inv.read_text())
    host = doc["nodes"][0]["host"]
    cmd = [str(TESTBED), "--name", name, "exec", "node1", "--", "sh", "-c",
           'cd "$1" && exec "$2" -m tests.standin --host 0.0.0.0 --port 8000 --model "$3"',
           "sh", str(REPO), PY, doc["serve"]["model"]]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(f"http://{host}:8000/metrics", timeout=2) as resp:
                if resp.status == 200:
                    return proc
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                sys.exit("the vLLM stand-in did not start on node1:8000")
            time.sleep(0.3)


def measure(inv: Path, runs: int) -> dict[str, list[float]]:
    doc = yaml.safe_load(inv.read_text())
    hosts = [n["host"] for n in doc["nodes"]]
    key = doc["ssh"]["identity_file"]
    kh = inv.parent / doc["ssh"]["known_hosts"]
    env = dict(os.environ)
    env["PDSH_SSH_ARGS"] = (f"-2 -a -x -l%u %h -i {key} -o UserKnownHostsFile={kh} "
                            "-o StrictHostKeyChecking=yes -o BatchMode=yes")
    pdsh = ["pdsh", "-R", "ssh", "-l", "root", "-w", ",".join(hosts), "hostname"]
    subprocess.run(pdsh, env=env, check=True, capture_output=True)  # warm caches once
    out = subprocess.run([PY, "-c", TIMER, str(inv), str(runs), json.dumps(pdsh), json.dumps(env)],
                         capture_output=True, text=True, cwd=str(REPO), check=False)
    if out.returncode != 0:
        sys.exit(f"timing failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--name", default="wbw", help="testbed name (reused if it is up)")
    ap.add_argument("--runs", type=int, default=15)
    a = ap.parse_args()
    inv8 = testbed_up(a.name, 8, docker=True)
    standin = None
    try:
        names = node_names(inv8)
        populate(a.name, a.name, names)
        for node in names:
            tb(a.name, "simhw", node, "healthy")
        standin = serve_standin(a.name, inv8)
        print(f"status --watch refresh vs one pdsh round, {a.runs} alternating runs each "
              "(median wall; connections of the refresh already open)")
        ratios = []
        for n, inv in ((2, subset(inv8, 2)), (8, inv8)):
            t = measure(inv, a.runs)
            refresh, pdsh = median(t["refresh"]), median(t["pdsh"])
            ratios.append((n, refresh / pdsh))
            report(f"{n} nodes", [("pdsh -R ssh ... hostname", pdsh),
                                  ("status --watch: one refresh", refresh)],
                   "pdsh -R ssh ... hostname")
            print(f"  (all refreshes: {', '.join(f'{x:.3f}' for x in t['refresh'])})")
            print(f"  (all pdsh rounds: {', '.join(f'{x:.3f}' for x in t['pdsh'])})")
        print("\ntarget: refresh / pdsh round <= 1.3: "
              + "; ".join(f"{n} nodes {r:.2f}" for n, r in ratios))
    finally:
        if standin is not None:
            standin.terminate()
            standin.wait(10)
        testbed_down(a.name)


if __name__ == "__main__":
    main()
