"""`dgxcluster start` / `stop` on 2 testbed nodes, timed and taken apart.

Every timestamp comes from the same clock (the testbed nodes are namespaces of this host):
  A  this benchmark launches `dgxcluster start`        (time.time())
  H  the head container starts                         (docker inspect .State.StartedAt)
  R  the last node's `ray start` prints "Ray runtime started"   (docker logs --timestamps)
  S0 the vLLM stand-in process starts                  (its log: "process started at ... epoch")
  S1 the stand-in serves                               (its log: "ready after ... ready at epoch")
  E  `dgxcluster start` exits
The stand-in's own time is S1-S0; Ray's own time is R-H. dgxcluster's own overhead is the
rest: (H-A) preflight, lock, env-files, docker run + (S0-R) noticing Ray is up and launching
vLLM + (E-S1) noticing vLLM is ready and reporting.

With `--executor native` (or `both`, the default: Ray's runs, then native's, same model
delay) there is no Ray: S0 and S1 are rank 0's (on the head; its own time includes waiting
for the headless ranks to join, which started before it), and dgxcluster's own overhead is
(S0-A) preflight, lock, env-files, the headless ranks' and rank 0's `docker run` + (E-S1).
The ratio native/ray of the wall time and of the own overhead is printed at the end.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from common import PY, ensure_image, ensure_model, testbed_down, testbed_up

from dgxcluster.core.session import Session
from dgxcluster.inventory import load_inventory

STANDIN_START = re.compile(r"process started at \S+ \(epoch ([0-9.]+)\)")
STANDIN_READY = re.compile(r"ready after [0-9.]+ s \(started at epoch ([0-9.]+), ready at epoch ([0-9.]+)\)")


def epoch(stamp: str) -> float:
    """Docker's RFC 3339 with nanoseconds -> epoch seconds."""
    stamp = stamp.strip().replace("Z", "+00:00")
    m = re.match(r"(.*?\.\d{1,6})\d*(\+.*)", stamp)
    return datetime.fromisoformat(m.group(1) + m.group(2) if m else stamp).timestamp()


def cli(inv: Path, *args: str) -> tuple[float, subprocess.CompletedProcess[str]]:
    t0 = time.time()
    proc = subprocess.run([PY, "-m", "dgxcluster", "-i", str(inv), *args], capture_output=True,
                          text=True, check=False)
    if proc.returncode != 0:
        sys.exit(f"dgxcluster {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
    return t0, proc


def ray_marks(s: Session, cluster: str) -> tuple[float, float]:
    """(head container started, last 'Ray runtime started' line) as epochs."""
    head = s.cluster.run(["docker", "inspect", "-f", "{{.State.StartedAt}}", f"dgxc-{cluster}-head"],
                         [s.inventory.head_name]).values[s.inventory.head_name].stdout
    marks = []
    for node in s.inventory.names:
        role = "head" if node == s.inventory.head_name else "worker"
        res = s.cluster.run(["sh", "-c", f"docker logs -t dgxc-{cluster}-{role} 2>&1 | "
                             "grep -m1 'Ray runtime started'"], [node]).values[node]
        marks.append(epoch(res.stdout.split()[0]))
    return epoch(head), max(marks)


def standin_marks(s: Session, cluster: str) -> tuple[float, float]:
    log = s.cluster.run(["cat", f".local/state/dgxcluster/{cluster}/logs/vllm.log"],
                        [s.inventory.head_name]).values[s.inventory.head_name].stdout
    ready = STANDIN_READY.search(log)
    start = STANDIN_START.search(log)
    if not ready or not start:
        sys.exit(f"no stand-in start/ready lines in vllm.log:\n{log[-2000:]}")
    return float(start.group(1)), float(ready.group(2))


def run_once(s: Session, inv: Path, cluster: str, executor: str) -> dict[str, float]:
    t_a, _ = cli(inv, "start", "--executor", executor)
    t_e = time.time()
    s0, s1 = standin_marks(s, cluster)
    row = {"total": t_e - t_a, "standin": s1 - s0}
    if executor == "ray":
        h, r = ray_marks(s, cluster)
        row.update({"ray": r - h, "pre": h - t_a, "ray_to_vllm": s0 - r})
        row["own"] = row["pre"] + row["ray_to_vllm"] + (t_e - s1)
    else:
        row.update({"pre": s0 - t_a})
        row["own"] = row["pre"] + (t_e - s1)
    row["ready_to_exit"] = t_e - s1
    row["over_standin"] = row["total"] - row["standin"]
    t_noop, _ = cli(inv, "start", "--executor", executor)
    row["noop"] = time.time() - t_noop
    t_stop, _ = cli(inv, "stop")
    row["stop"] = time.time() - t_stop
    return row


def report(executor: str, rows: list[dict[str, float]]) -> dict[str, float]:
    def med(key: str) -> float:
        return statistics.median(r[key] for r in rows)

    print(f"\ndgxcluster start/stop on 2 testbed nodes, executor {executor}, "
          f"median of {len(rows)} runs")
    print(f"  start, wall                                       {med('total'):7.2f} s")
    print(f"    vLLM stand-in's own start (rank 0's log)        {med('standin'):7.2f} s")
    if executor == "ray":
        print(f"    Ray's own start (head container -> last node)   {med('ray'):7.2f} s")
    print(f"  overhead of start over the stand-in's own time    {med('over_standin'):7.2f} s")
    print(f"  dgxcluster's own overhead (target <= 3 s)         {med('own'):7.2f} s")
    if executor == "ray":
        print(f"    before the head container runs                  {med('pre'):7.2f} s")
        print(f"    Ray up -> stand-in launched                     {med('ray_to_vllm'):7.2f} s")
    else:
        print(f"    before rank 0's vLLM runs (headless ranks first) {med('pre'):6.2f} s")
    print(f"    stand-in ready -> start exits                   {med('ready_to_exit'):7.2f} s")
    print(f"  start again (already running, no change)          {med('noop'):7.2f} s")
    print(f"  stop                                              {med('stop'):7.2f} s")
    return {k: med(k) for k in ("total", "own", "stop")}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--name", default="bstart", help="testbed name")
    ap.add_argument("--executor", choices=("both", "ray", "native"), default="both")
    a = ap.parse_args()
    executors = ["ray", "native"] if a.executor == "both" else [a.executor]
    inv = testbed_up(a.name, 2, docker=True)
    rows: dict[str, list[dict[str, float]]] = {e: [] for e in executors}
    try:
        ensure_image(inv)
        ensure_model(a.name, inv)
        with Session.open(load_inventory(inv), command="bench") as s:
            cli(inv, "stop")
            for executor in executors:
                for i in range(a.runs):
                    row = run_once(s, inv, a.name, executor)
                    rows[executor].append(row)
                    print(f"{executor} run {i + 1}: " + "  ".join(
                        f"{k} {v:.2f}s" for k, v in row.items()), flush=True)
    finally:
        testbed_down(a.name)
    medians = {e: report(e, r) for e, r in rows.items()}
    if len(medians) == 2:
        ray, native = medians["ray"], medians["native"]
        print("\nnative / ray (medians)")
        for key, label in (("total", "start, wall"), ("own", "dgxcluster's own overhead"),
                           ("stop", "stop")):
            print(f"  {label:<28}{native[key]:7.2f} s / {ray[key]:6.2f} s = "
                  f"{native[key] / ray[key]:.2f}")


if __name__ == "__main__":
    main()
