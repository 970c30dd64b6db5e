"""300 MB of output through `dgxcluster exec` on one node, against plain `ssh` in the same run.

Shapes: many short lines (100 B each, `yes | head -c`), one line of the whole size (no
newline at all), and `exec --json` of the short lines (only each stream's last MiB is kept).
Runs alternate (dgxcluster, ssh, dgxcluster, ...) so both see the same machine state; both
write to /dev/null. Peak RSS is the CLI process's own (`wait4`'s ru_maxrss), so it holds
whatever the output size. Targets (issue 12): time <= 1.5x ssh; peak RSS <= 100 MB.
dgxcluster runs with its bytecode compiled, as an installed copy has it (`testbed_up`).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import PY, median, testbed_down, testbed_up

LINE = "0" * 99  # with its newline, a 100-byte line


def shapes(size: int) -> dict[str, str]:
    return {
        "short lines": f"yes {LINE} | head -c {size}",
        "one line": f"head -c {size} /dev/zero | tr '\\0' x",
    }


def measure(argv: list[str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of argv, stdout and stderr to /dev/null."""
    with open(os.devnull, "wb") as null:
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=null, stderr=subprocess.PIPE)
        assert proc.stderr is not None
        err = proc.stderr.read()
        _, status, usage = os.wait4(proc.pid, 0)
        dt = time.perf_counter() - t0
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        sys.exit(f"benchmark command failed ({code}): {' '.join(argv)}\n{err.decode()[-2000:]}")
    return dt, usage.ru_maxrss / 1024


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
        measure(ssh + ["true"])  # warm caches once each
        measure(dgx + ["--", "true"])
        print(f"{a.mb} MB of output from one testbed node, {a.runs} alternating runs each "
              "(median wall; peak RSS of the client process)")
        worst_ratio, worst_rss = 0.0, 0.0
        cases = [(label, cmd, []) for label, cmd in shapes(size).items()]
        cases.append(("short lines, exec --json", shapes(size)["short lines"], ["--json"]))
        for label, cmd, opts in cases:
            t_dgx, t_ssh, rss_dgx, rss_ssh = [], [], [], []
            for _ in range(a.runs):
                t, r = measure(dgx + opts + ["--", "sh", "-c", cmd])
                t_dgx.append(t)
                rss_dgx.append(r)
                t, r = measure(ssh + [cmd])
                t_ssh.append(t)
                rss_ssh.append(r)
            ratio = median(t_dgx) / median(t_ssh)
            worst_ratio, worst_rss = max(worst_ratio, ratio), max(worst_rss, max(rss_dgx))
            print(f"\n{label}: `{cmd}`")
            print(f"  ssh                   {median(t_ssh):7.2f} s   peak RSS {max(rss_ssh):6.1f} MB")
            print(f"  dgxcluster exec{' ' + ' '.join(opts) if opts else '':<7}{median(t_dgx):7.2f} s"
                  f"   peak RSS {max(rss_dgx):6.1f} MB   time ratio vs ssh: {ratio:4.2f}")
        print(f"\nworst time ratio {worst_ratio:.2f} (target <= 1.5); worst peak RSS "
              f"{worst_rss:.1f} MB (target <= 100)")
    finally:
        testbed_down(name)


if __name__ == "__main__":
    main()
