#!/usr/bin/env python3
"""Brings this node's part of a cluster back when the node boots (`serve.persist`).

Standalone (stdlib only): `python3 nodeside.pyz boot PLAN.json`, the `ExecStart=` of the
node's systemd unit `dgxcluster-<cluster>.service` (`serving/persist.py` writes both).

It knows nothing of executors or vLLM: the plan is data made operator-side by the same
functions `start` uses, an ordered list of steps, each one of
- `{"wait_tcp": [HOST, PORT], "timeout_s": S}`: until a TCP connection to HOST:PORT opens
  (a worker waiting for the head's Ray GCS, a headless rank for rank 0's store);
- `{"run": ARGV}`: run it once; a non-zero exit fails the boot (`docker start`, vLLM's launch);
- `{"wait_run": ARGV, "until_regex": R, "count": N, "timeout_s": S}`: run it again and again
  until R matches at least N times in its output (`ray status` counting the nodes);
every step may carry `what`, the line the log shows for it. Steps run in order; the first
that fails ends the run (the later ones need it), exit status 1, the reason in the log.
The log (`log` in the plan) is appended to, one timestamped line per event, so `logs`
collects it; the unit's output (the journal) gets the same lines.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time
from typing import Any

POLL_S = 1.0
TRY_TIMEOUT_S = 60.0  # one try of a wait_run command
TAIL_CHARS = 500


class StepFailed(Exception):
    pass


def _run(argv: list[str], timeout: float) -> tuple[int, str]:
    try:
        p = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return 124, f"timed out after {timeout:g}s"
    except OSError as exc:
        return 127, str(exc)
    return p.returncode, p.stdout.decode(errors="replace")


def _connect(host: str, port: int, timeout: float) -> bool:
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError:
        return False
    return True


class Boot:
    def __init__(self, plan: dict[str, Any], run: Any = None, connect: Any = None,
                 clock: Any = time.monotonic, sleep: Any = time.sleep, log: Any = None) -> None:
        self.plan = plan
        self.run = run or _run
        self.connect = connect or _connect
        self.clock = clock
        self.sleep = sleep
        self.log = log or _log_to(plan.get("log"))

    def main(self) -> int:
        steps = self.plan.get("steps", [])
        self.log(f"boot: cluster {self.plan.get('cluster')} node {self.plan.get('node')}, "
                 f"config {self.plan.get('config')}: {len(steps)} step(s)")
        t0 = self.clock()
        for i, step in enumerate(steps, 1):
            what = step.get("what") or _describe(step)
            self.log(f"step {i}/{len(steps)}: {what}")
            try:
                self.step(step)
            except StepFailed as exc:
                self.log(f"FAILED step {i}/{len(steps)} ({what}): {exc}")
                return 1
        self.log(f"boot: done after {self.clock() - t0:.1f}s")
        return 0

    def step(self, step: dict[str, Any]) -> None:
        if "wait_tcp" in step:
            host, port = step["wait_tcp"]
            self._until(lambda: self.connect(host, int(port), 5.0), float(step["timeout_s"]),
                        f"{host}:{port} did not accept a connection")
        elif "run" in step:
            code, out = self.run(list(step["run"]), float(step.get("timeout_s", TRY_TIMEOUT_S)))
            if code != 0:
                raise StepFailed(f"exit status {code}: {out.strip()[-TAIL_CHARS:]}")
        elif "wait_run" in step:
            regex = re.compile(step["until_regex"], re.MULTILINE)
            need = int(step.get("count", 1))
            last: list[str] = [""]

            def matched() -> bool:
                code, out = self.run(list(step["wait_run"]), TRY_TIMEOUT_S)
                last[0] = f"exit {code}: {out.strip()[-TAIL_CHARS:]}"
                return code == 0 and len(regex.findall(out)) >= need
            self._until(matched, float(step["timeout_s"]),
                        f"no {need} match(es) of {step['until_regex']!r}; last: {last[0]}",
                        lambda: last[0])
        else:
            raise StepFailed(f"unknown step {sorted(step)}")

    def _until(self, check: Any, timeout_s: float, why: str, detail: Any = None) -> None:
        t0 = self.clock()
        while not check():
            if self.clock() - t0 >= timeout_s:
                more = detail() if detail else ""
                raise StepFailed(f"{why} within {timeout_s:g}s" + (f" (last: {more})" if more
                                                                    and more not in why else ""))
            self.sleep(POLL_S)


def _describe(step: dict[str, Any]) -> str:
    for key in ("wait_tcp", "run", "wait_run"):
        if key in step:
            return f"{key} {step[key]}"
    return str(step)


def _log_to(path: str | None) -> Any:
    def log(line: str) -> None:
        text = f"{time.strftime('%Y-%m-%dT%H:%M:%S%z')} {line}\n"
        sys.stdout.write(text)
        sys.stdout.flush()
        if path:
            try:
                with open(path, "a", encoding="utf-8") as fh:
                    fh.write(text)
            except OSError:
                pass
    return log


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        sys.stderr.write("usage: boot PLAN.json\n")
        return 2
    try:
        with open(argv[0], encoding="utf-8") as fh:
            plan = json.load(fh)
    except (OSError, ValueError) as exc:
        sys.stderr.write(f"boot: cannot read {argv[0]}: {exc}\n")
        return 2
    return Boot(plan).main()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
