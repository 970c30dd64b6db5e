"""A killed vLLM brought back by the head's watcher, timed on 2 testbed nodes.

  K  the benchmark kills the stand-in (SIGKILL)                     (time.time())
  D  the watcher records the restart (restarts.jsonl `time`, 1 s resolution)
  S  the new stand-in's own load time                               (its log: "ready after X s")
  R  `/v1/models` answers 200 again, from this machine              (time.time())
R-K is what a client sees; R-K-S is dgxcluster's own part (detection: up to one
`health_interval_s`, then `restart_backoff_s`, the relaunch through `docker exec`).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import PY, TESTBED, ensure_image, ensure_model, testbed_down, testbed_up

READY = re.compile(r"ready after ([0-9.]+) s")
STATE = "/root/.local/state/dgxcluster"


def dgx(inv: Path, env: dict[str, str], *args: str) -> str:
    proc = subprocess.run([PY, "-m", "dgxcluster", "-i", str(inv), *args], capture_output=True,
                          text=True, env={**os.environ, **env}, check=False)
    if proc.returncode != 0:
        sys.exit(f"dgxcluster {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
    return proc.stdout


def node(name: str, *argv: str) -> str:
    return subprocess.run([str(TESTBED), "--name", name, "exec", "node1", "--", *argv],
                          capture_output=True, text=True, check=True).stdout


def serving(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/models", timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--name", default="hb2")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--load-s", type=float, default=0.0, help="the stand-in's model load time")
    args = ap.parse_args()
    inv = testbed_up(args.name, 2, docker=True)
    try:
        ensure_image(inv)
        ensure_model(args.name, inv)
        env = {"DGXCLUSTER_CONTAINER__ENV": json.dumps({"DGXCLUSTER_STANDIN_LOAD_S": str(args.load_s)}),
               "DGXCLUSTER_SERVE__RESTART": "on-failure", "DGXCLUSTER_SERVE__HEALTH_INTERVAL_S": "1",
               "DGXCLUSTER_SERVE__RESTART_BACKOFF_S": "1",
               "DGXCLUSTER_SERVE__MAX_RESTARTS": str(args.rounds + 1)}
        out = dgx(inv, env, "start")
        url = re.search(r"^endpoint: (\S+)", out, re.M).group(1)  # type: ignore[union-attr]
        log = f"{STATE}/{args.name}/logs/vllm.log"
        seen, own = [], []
        for _ in range(args.rounds):
            ps = subprocess.run([str(TESTBED), "--name", args.name, "ps", "node1"],
                                capture_output=True, text=True, check=True).stdout
            pid = next(int(ln.split()[0]) for ln in ps.splitlines() if "vllm serve" in ln)
            k = time.time()
            os.kill(pid, 9)
            while not serving(url) or time.time() - k < 0.5:
                time.sleep(0.1)
            seen.append(time.time() - k)
            m = READY.search(node(args.name, "cat", log))
            own.append(float(m.group(1)) if m else float("nan"))
            time.sleep(3)
        print(f"killed vLLM -> serving again (median of {args.rounds}): "
              f"{statistics.median(seen):.2f} s; the stand-in's own load {statistics.median(own):.2f} s; "
              f"dgxcluster's part {statistics.median(seen) - statistics.median(own):.2f} s "
              f"(health_interval_s 1, restart_backoff_s 1)")
        dgx(inv, env, "stop")
    finally:
        testbed_down(args.name)


if __name__ == "__main__":
    main()
