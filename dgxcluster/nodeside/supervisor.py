#!/usr/bin/env python3
"""Keeps vLLM serving on its node, within a budget: the watcher `serve.restart: on-failure`
leaves on the head node (native executor: on every node, over its own rank), so that
healing does not need the operator's machine.

Standalone (stdlib only): `python3 nodeside.pyz supervisor CONFIG.json`, started detached
(`setsid`) by `start` once the endpoint is ready, stopped by `stop` before anything else.

It knows nothing of executors. The config names what to watch and how to bring it back:
- `health_url`: vLLM's `/health`. Health is that answering 200, not a container being up:
  `failed_probes` failures in a row (no answer, 5xx) after it was healthy count as a hang.
  Absent (a Ray worker node, where no vLLM runs: the head's watcher looks after vLLM), only
  the containers are watched;
- `containers`: the containers dgxcluster runs on this node (core/naming.py); one that is
  not running has failed, and is started again (`docker start`) before vLLM is relaunched;
- `exit_file`: where vLLM's exit status appears when its process ends (start's launcher);
- `relaunch`: the argv that starts vLLM again (the Ray executor: `docker exec -d` of start's
  launcher in the head container); `kill`: the argv that ends a hung one. Without `relaunch`
  (an executor whose container is vLLM), restarting the container is the relaunch.

Bounded: at most `max_restarts` within `window_s`, waiting `backoff_s` doubled per failure
in a row (at most `backoff_max_s`), and only after vLLM had been healthy. A relaunch that is
not healthy within `ready_timeout_s`, or exits first, is another failure. Once the budget is
spent it gives up: it stops vLLM and the containers (the cluster is left stopped, nothing
loops) and says why. Every restart is a JSON line in `records` (time, what, why, exit status,
the log's last lines); `state` holds the current state in one JSON line for `status`.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from typing import Any

TAIL_LINES = 20


class Supervisor:
    def __init__(self, cfg: dict[str, Any], clock: Any = time.time, sleep: Any = time.sleep,
                 run: Any = None, get: Any = None) -> None:
        self.cfg = cfg
        self.clock = clock
        self.sleep = sleep
        self.run = run or _run
        self.get = get or _health
        self.recent: deque[float] = deque()
        self.in_a_row = 0
        self.restarts = 0
        self.healthy_once = False
        self.state = "watching"
        self.last: dict[str, Any] | None = None
        self.stopping = False
        self.failed = 0  # /health probes failed in a row
        self.since = clock()  # when the running vLLM was (re)launched

    # -- what is wrong, if anything ------------------------------------------------------
    def failure(self, failed_probes: int, since: float) -> tuple[str, str, int | None] | None:
        """(what, why, exit status) of the first failure seen, or None. Nothing counts
        before vLLM was first healthy; a relaunch gets `ready_timeout_s` to load."""
        if not self.healthy_once:
            return None
        before = " before it was healthy again" if self.state == "starting" else ""
        code = self.exit_status()
        # without relaunch vLLM is the container's main process: its own exit status, when
        # its launcher wrote one, says more than the container's
        if code is not None and not self.cfg.get("relaunch"):
            return "vllm", f"vLLM exited with status {code}{before}", code
        for name in self.cfg.get("containers", []):
            status, ccode = self.container(name)
            if status != "running":
                return f"container {name}", f"container {status} (exit {ccode})", ccode
        code = self.exit_status()
        if code is not None:
            return "vllm", f"vLLM exited with status {code}{before}", code
        if self.state == "watching" and failed_probes >= int(self.cfg["failed_probes"]):
            return "vllm", (f"vLLM stopped answering {self.cfg['health_url']} "
                            f"({failed_probes} probes in a row) while its process ran"), None
        timeout = float(self.cfg["ready_timeout_s"])
        if self.state == "starting" and self.clock() - since > timeout:
            return "vllm", f"not healthy within {timeout:g}s of its relaunch", None
        return None

    def container(self, name: str) -> tuple[str, int | None]:
        rc, out = self.run(["docker", "inspect", "-f", "{{.State.Status}} {{.State.ExitCode}}",
                            name])
        parts = out.split()
        if rc != 0 or len(parts) != 2:
            return "absent", None
        return parts[0], int(parts[1]) if parts[1].lstrip("-").isdigit() else None

    def exit_status(self) -> int | None:
        if not self.cfg.get("exit_file"):
            return None
        try:
            with open(self.cfg["exit_file"]) as fh:
                text = fh.read().strip()
        except OSError:
            return None
        return int(text) if text.lstrip("-").isdigit() else None

    # -- acting ----------------------------------------------------------------------------
    def restart(self, what: str, why: str, code: int | None) -> bool:
        """Bring back what failed, within the budget; False when it gave up."""
        now = self.clock()
        window = float(self.cfg["window_s"])
        while self.recent and now - self.recent[0] > window:
            self.recent.popleft()
        record = {"time": _iso(now), "what": what, "why": why, "exit": code,
                  "tail": self.tail(), "attempt": len(self.recent) + 1}
        if len(self.recent) >= int(self.cfg["max_restarts"]):
            record["action"] = "gave up"
            self.give_up(record)
            return False
        delay = min(float(self.cfg["backoff_s"]) * 2 ** self.in_a_row, float(self.cfg["backoff_max_s"]))
        record["action"] = "restart"
        record["backoff_s"] = delay
        self.state = "restarting"
        self.last = record
        self.save()
        self.sleep(delay)
        if self.stopping:
            return False
        self.recent.append(self.clock())
        self.restarts += 1
        self.in_a_row += 1
        self.bring_back(what)
        self.append(record)
        self.state = "starting"
        self.save()
        return True

    def bring_back(self, what: str) -> None:
        relaunch = self.cfg.get("relaunch")
        if not relaunch and self.cfg.get("exit_file"):  # the container's start relaunches
            with contextlib.suppress(OSError):  # vLLM: no stale exit status may be seen
                os.remove(self.cfg["exit_file"])
        for name in self.cfg.get("containers", []):
            status, _ = self.container(name)
            if status != "running":
                self.run(["docker", "start", name])
            elif what == f"container {name}" or (not relaunch and what == "vllm"):
                self.run(["docker", "restart", name])
        if relaunch:
            if self.exit_status() is None and self.cfg.get("kill"):
                self.run(self.cfg["kill"])  # a hung vLLM: end it, its launcher records the exit
                self.wait_exit(30.0)
            # the launcher removes it too, but only once it runs: no stale exit is seen
            with contextlib.suppress(OSError):
                os.remove(self.cfg["exit_file"])
            self.run(relaunch)

    def wait_exit(self, timeout: float) -> None:
        end = self.clock() + timeout
        while self.exit_status() is None and self.clock() < end:
            self.sleep(0.5)

    def give_up(self, record: dict[str, Any]) -> None:
        """Budget spent: leave the cluster stopped, then say why (the record is written once
        it is true, so whoever reads "left stopped" finds the containers stopped)."""
        limit = f"{self.cfg['max_restarts']} restart(s) within {float(self.cfg['window_s']):g}s"
        # the head's (or a rank's) stops what serves; a Ray worker's only its own container
        left = "cluster" if self.cfg.get("health_url") else ", ".join(self.cfg.get("containers", []))
        record["why"] = f"{record['why']}; gave up after {limit}, {left} left stopped"
        self.state = "gave up"
        if self.cfg.get("relaunch") and self.cfg.get("kill") and self.exit_status() is None:
            self.run(self.cfg["kill"])
        for name in self.cfg.get("containers", []):
            self.run(["docker", "stop", "-t", "10", name])
        self.append(record)
        self.last = record
        self.save()

    # -- records ---------------------------------------------------------------------------
    def tail(self) -> list[str]:
        if not self.cfg.get("log"):  # no vLLM log here: the watched container's own
            names = self.cfg.get("containers", [])
            if not names:
                return []
            _, out = self.run(["sh", "-c", f'docker logs --tail {TAIL_LINES} "$1" 2>&1', "sh",
                                names[0]])
            return out.splitlines()[-TAIL_LINES:]
        try:
            with open(self.cfg["log"], "rb") as fh:
                fh.seek(0, os.SEEK_END)
                fh.seek(max(0, fh.tell() - 64 * 1024))
                lines = fh.read().decode("utf-8", "replace").splitlines()
        except OSError:
            return []
        return lines[-TAIL_LINES:]

    def append(self, record: dict[str, Any]) -> None:
        with open(self.cfg["records"], "a") as fh:
            fh.write(json.dumps(record) + "\n")

    def save(self) -> None:
        doc = {"state": self.state, "restarts": self.restarts, "pid": os.getpid(),
               "max_restarts": self.cfg["max_restarts"], "window_s": self.cfg["window_s"],
               "config": self.cfg.get("config", ""), "since": _iso(self.clock()),
               "last": {k: v for k, v in (self.last or {}).items() if k != "tail"} or None}
        tmp = self.cfg["state"] + ".tmp"
        with open(tmp, "w") as fh:
            fh.write(json.dumps(doc) + "\n")
        os.replace(tmp, self.cfg["state"])

    # -- the loop --------------------------------------------------------------------------
    def loop(self, rounds: int | None = None) -> int:
        """Watch until stopped or given up (`rounds`: for tests)."""
        self.save()
        while not self.stopping and (rounds is None or rounds > 0):
            rounds = None if rounds is None else rounds - 1
            url = self.cfg.get("health_url")
            if url is None or self.get(url, float(self.cfg["probe_timeout_s"])):
                self.failed = 0
                if self.state != "watching" or not self.healthy_once:
                    self.healthy_once = True
                    self.in_a_row = 0
                    self.state = "watching"
                    self.save()
            else:
                self.failed += 1
            bad = self.failure(self.failed, self.since)
            if bad is not None:
                if not self.restart(*bad):
                    return 0
                self.failed = 0
                self.since = self.clock()
            self.sleep(float(self.cfg["interval_s"]))
        if self.stopping and self.state != "gave up":
            self.state = "stopped"
            self.save()
        return 0


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def _run(argv: list[str]) -> tuple[int, str]:
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return 1, str(exc)
    return p.returncode, p.stdout


def _health(url: str, timeout: float) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - fixed URL
            return int(resp.status) == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        sys.stderr.write("usage: supervisor CONFIG.json\n")
        return 2
    with open(argv[0]) as fh:
        cfg = json.load(fh)
    halt = threading.Event()
    sup = Supervisor(cfg, sleep=halt.wait)  # a stop ends any wait at once

    def stop(_sig: int, _frame: object) -> None:
        sup.stopping = True
        halt.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    what = [cfg["health_url"]] if cfg.get("health_url") else []
    print(f"supervisor: watching {' and '.join([*what, *cfg.get('containers', [])])}", flush=True)
    return sup.loop()
