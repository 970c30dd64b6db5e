"""A whole cluster rebooted with `start --persist`, timed until it serves again, on 2 testbed
nodes.

  B  the benchmark starts `scripts/testbed reboot node1 node2`            (time.time())
  U  the reboot command returns: processes killed, dockerd + sshd back, units started
  S  the new stand-in's own load time                      (its log: "ready after X s")
  R  `/v1/models` answers 200 again, from this machine                    (time.time())
R-B is what a client sees; R-U is the boot plans' part plus S (the head's containers,
Ray counting every node, vLLM's launch), R-B-S is everything that is not the model loading.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import TESTBED, ensure_image, ensure_model, testbed_down, testbed_up
from heal.heal_bench import READY, STATE, dgx, node, serving


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--name", default="pb2")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--executor", choices=["ray", "native"], default="ray")
    ap.add_argument("--load-s", type=float, default=0.0, help="the stand-in's model load time")
    ap.add_argument("--keep", action="store_true", help="leave the testbed up")
    args = ap.parse_args()
    inv = testbed_up(args.name, 2, docker=True)
    try:
        ensure_image(inv)
        ensure_model(args.name, inv)
        env = {"DGXCLUSTER_CONTAINER__ENV": json.dumps({"DGXCLUSTER_STANDIN_LOAD_S": str(args.load_s)}),
               "DGXCLUSTER_SERVE__EXECUTOR": args.executor}
        out = dgx(inv, env, "start", "--persist")
        url = re.search(r"^endpoint: (\S+)", out, re.M).group(1)  # type: ignore[union-attr]
        log = f"{STATE}/{args.name}/logs/vllm.log"
        seen, boot, own = [], [], []
        for _ in range(args.rounds):
            b = time.time()
            subprocess.run([str(TESTBED), "--name", args.name, "reboot", "node1", "node2"],
                           capture_output=True, text=True, check=True)
            u = time.time()
            while not serving(url):
                if time.time() - b > 900:
                    sys.exit("not serving 900 s after the reboot")
                time.sleep(0.2)
            r = time.time()
            seen.append(r - b)
            boot.append(r - u)
            m = READY.search(node(args.name, "cat", log))
            own.append(float(m.group(1)) if m else float("nan"))
        print(f"{args.executor}: full-cluster reboot -> serving again (median of {args.rounds}): "
              f"{statistics.median(seen):.1f} s (of which the reboot itself "
              f"{statistics.median(seen) - statistics.median(boot):.1f} s, the boot plans "
              f"{statistics.median(boot):.1f} s); the stand-in's own load "
              f"{statistics.median(own):.2f} s")
        dgx(inv, env, "stop")
    finally:
        if not args.keep:
            testbed_down(args.name)


if __name__ == "__main__":
    main()
