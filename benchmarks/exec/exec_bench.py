"""300 MB of output through `dgxcluster exec` on one node, against plain `ssh` in the same run.

Shapes: many short lines (100 B each, `yes | head -c`), one line of the whole size (no
newline at all), and `exec --json` of the short lines (only each stream's last MiB is kept).
dgxcluster runs twice per round: cold (a new process imports everything, as without a warm
server) and warm (`dgxcluster warm start` before the runs: the command is forked from a
server that has imported dgxcluster; its SSH connection is as new as ssh's). Runs alternate
(cold, warm, ssh, cold, ...) so all see the same machine state; all write to /dev/null.
Peak RSS is the CLI process's own (`wait4`'s ru_maxrss), so it holds whatever the output
size; warm, it is the worker's, which the client reports ($DGXCLUSTER_WARM_REPORT), the
larger of it and the client's own. Targets (issue 12): time <= 1.5x ssh; peak RSS <= 100 MB.
dgxcluster runs with its bytecode compiled, as an installed copy has it (`testbed_up`).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import COLD, PY, median, testbed_down, testbed_up, warm_server

LINE = "0" * 99  # with its newline, a 100-byte line


def shapes(size: int) -> dict[str, str]:
    return {
        "short lines": f"yes {LINE} | head -c {size}",
        "one line": f"head -c {size} /dev/zero | tr '\\0' x",
    }


def measure(argv: list[str], env: dict[str, str] | None = None) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of argv, stdout and stderr to /dev/null; run warm
    (`env` names a warm server), the larger of the client's and the worker's peak RSS."""
    report = Path(tempfile.mkstemp(prefix="dgxc-warm-report-")[1])
    env = {**(env or COLD), "DGXCLUSTER_WARM_REPORT": str(report)}
    with open(os.devnull, "wb") as null:
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=null, stderr=subprocess.PIPE, env=env)
        assert proc.stderr is not None
        err = proc.stderr.read()
        _, status, usage = os.wait4(proc.pid, 0)
        dt = time.perf_counter() - t0
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        sys.exit(f"benchmark command failed ({code}): {' '.join(argv)}\n{err.decode()[-2000:]}")
    worker_kb = json.loads(report.read_text())["maxrss_kb"] if report.stat().st_size else 0
    report.unlink()
    return dt, max(usage.ru_maxrss, worker_kb) / 1024


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=int, default=300, help="output size in MB (default 300)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--name", default="bexec", help="the testbed's name (default bexec)")
    a = ap.parse_args()
    name = a.name
    inv = testbed_up(name, 1)
    try:
        text = inv.read_text()
        host = next(ln.split()[-1] for ln in text.splitlines() if ln.strip().startswith("host:"))
        key = next(ln.split()[-1] for ln in text.splitlines() if "identity_file:" in ln)
        kh = inv.with_suffix(".known_hosts")
        ssh = ["ssh", "-i", key, "-o", f"UserKnownHostsFile={kh}", "-o", "StrictHostKeyChecking=yes",
               "-o", "BatchMode=yes", f"root@{host}"]
        dgx = [PY, "-m", "dgxcluster", "-i", str(inv), "exec"]
        size = a.mb * 1000 * 1000
        with warm_server() as warm:
            measure(ssh + ["true"])  # warm caches once each
            measure(dgx + ["--", "true"])
            measure(dgx + ["--", "true"], warm)
            print(f"{a.mb} MB of output from one testbed node, {a.runs} alternating runs each "
                  "(median wall; peak RSS of the process doing the work)")
            worst = {"cold": [0.0, 0.0], "warm": [0.0, 0.0]}
            cases = [(label, cmd, []) for label, cmd in shapes(size).items()]
            cases.append(("short lines, exec --json", shapes(size)["short lines"], ["--json"]))
            for label, cmd, opts in cases:
                t: dict[str, list[float]] = {"cold": [], "warm": [], "ssh": []}
                rss: dict[str, list[float]] = {"cold": [], "warm": [], "ssh": []}
                for _ in range(a.runs):
                    for how, argv, env in (("cold", dgx + opts + ["--", "sh", "-c", cmd], None),
                                           ("warm", dgx + opts + ["--", "sh", "-c", cmd], warm),
                                           ("ssh", ssh + [cmd], None)):
                        dt, r = measure(argv, env)
                        t[how].append(dt)
                        rss[how].append(r)
                print(f"\n{label}: `{cmd}`")
                print(f"  ssh                        {median(t['ssh']):7.2f} s   "
                      f"peak RSS {max(rss['ssh']):6.1f} MB")
                for how in ("cold", "warm"):
                    ratio = median(t[how]) / median(t["ssh"])
                    worst[how] = [max(worst[how][0], ratio), max(worst[how][1], max(rss[how]))]
                    name = f"dgxcluster exec{' ' + ' '.join(opts) if opts else ''} ({how})"
                    print(f"  {name:<27}{median(t[how]):7.2f} s   peak RSS {max(rss[how]):6.1f} MB"
                          f"   time ratio vs ssh: {ratio:4.2f}")
        for how, (ratio, peak) in worst.items():
            print(f"\n{how}: worst time ratio {ratio:.2f} (target <= 1.5); worst peak RSS "
                  f"{peak:.1f} MB (target <= 100)")
    finally:
        testbed_down(name)


if __name__ == "__main__":
    main()
