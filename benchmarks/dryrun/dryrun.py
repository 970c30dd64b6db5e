"""How long `start --dry-run` takes now that it validates every vLLM flag, taken apart.

Rows (median of N runs, wall time of the whole CLI process unless said otherwise):
  python -c pass                          the interpreter's floor on this machine
  nodes (load + recipe merge + flag check) everything `start` does before touching a node
  start --dry-run                          the above, plus reading $HOME on every node (SSH)
  start --recipe R --dry-run               the same with a recipe merged under the inventory
  flag check alone (in-process)            `serving.flagcheck.check` on the merged settings,
                                           snapshots loaded once (what a warm process pays)
A 2-node testbed without Docker is enough: a dry run starts nothing.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from common import PY, median, report, testbed_down, testbed_up, timed

RECIPE = "testbed-qwen3-0.6b"


def in_process(inventory: Path, runs: int) -> tuple[float, float]:
    """(first check, later checks): the first pays for loading and rebuilding the snapshot."""
    from dgxcluster.inventory import load_inventory
    from dgxcluster.recipes.merge import resolve
    from dgxcluster.serving.flagcheck import check

    merged = resolve(load_inventory(inventory), RECIPE)
    t = time.perf_counter()
    check(merged)
    first = time.perf_counter() - t
    later = []
    for _ in range(runs):
        t = time.perf_counter()
        check(merged)
        later.append(time.perf_counter() - t)
    return first, median(later)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--name", default="bdry")
    a = ap.parse_args()
    inv = testbed_up(a.name, 2)
    try:
        cli = [PY, "-m", "dgxcluster", "-i", str(inv)]
        rows = [
            ("python -c pass", median([timed([PY, "-c", "pass"]) for _ in range(a.runs)])),
            ("nodes (load + merge + flag check)",
             median([timed([*cli, "nodes"]) for _ in range(a.runs)])),
            ("start --dry-run", median([timed([*cli, "start", "--dry-run"]) for _ in range(a.runs)])),
            (f"start --recipe {RECIPE} --dry-run",
             median([timed([*cli, "start", "--recipe", RECIPE, "--dry-run"]) for _ in range(a.runs)])),
        ]
        first, later = in_process(inv, a.runs)
        rows += [("flag check alone, first (in-process)", first),
                 ("flag check alone, warm (in-process)", later)]
        report(f"start --dry-run with validation, 2 nodes, median of {a.runs}", rows,
               "python -c pass")
    finally:
        testbed_down(a.name)


if __name__ == "__main__":
    main()
