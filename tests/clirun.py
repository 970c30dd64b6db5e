"""The real CLI in the background, for tests that inject a fault at a given moment: wait for
a line of its live output, then cut a node, kill sshd, or send SIGINT (started by
`tests.children.spawn`: SIGINT at its default, killed with its process group at the test's end)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from tests.children import spawn
from tests.conftest import REPO


class Background:
    """`python -m dgxcluster ARGS` with stderr read line by line as it comes."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        full = {k: v for k, v in os.environ.items() if not k.startswith("DGXCLUSTER_")}
        full.update(env or {})
        self.started = time.monotonic()
        self.proc = spawn([sys.executable, "-m", "dgxcluster", *args], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, env=full, cwd=str(REPO))
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._out: list[str] = []
        threading.Thread(target=self._read_err, daemon=True).start()
        threading.Thread(target=self._read_out, daemon=True).start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _read_err(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self._cond:
                self.lines.append(line)
                self._cond.notify_all()
        with self._cond:
            self.lines.append("")  # EOF marker
            self._cond.notify_all()

    def _read_out(self) -> None:
        assert self.proc.stdout is not None
        self._out.append(self.proc.stdout.read())

    def wait_for(self, pattern: str, timeout: float = 300) -> str:
        """The first stderr line matching `pattern` (regex); fails if the run ends first."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        seen = 0
        with self._cond:
            while True:
                for line in self.lines[seen:]:
                    if line == "" and seen < len(self.lines):
                        raise AssertionError(f"ended before {pattern!r}:\n{self.stderr}")
                    if rx.search(line):
                        return line
                seen = len(self.lines)
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no line {pattern!r} within {timeout}s:\n{self.stderr}")
                self._cond.wait(min(left, 1.0))

    def interrupt(self) -> None:
        self.proc.send_signal(signal.SIGINT)

    def finish(self, timeout: float = 600) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
            self.elapsed = time.monotonic() - self.started
            deadline = time.monotonic() + 10
            while not (self.lines and self.lines[-1] == "") and time.monotonic() < deadline:
                time.sleep(0.05)

    @property
    def stderr(self) -> str:
        return "".join(self.lines)

    @property
    def stdout(self) -> str:
        return "".join(self._out)


class CmdlineSampler(threading.Thread):
    """Reads every process's command line on the host (the nodes, and their containers,
    share its PID namespace) until stopped; records any holding `needle`."""

    def __init__(self, needle: str) -> None:
        super().__init__(daemon=True)
        self.needle = needle.encode()
        self.sweeps = 0
        self.seen: set[bytes] = set()
        self.hits: list[str] = []
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            for entry in Path("/proc").iterdir():
                if not entry.name.isdigit():
                    continue
                try:
                    cmd = (entry / "cmdline").read_bytes()
                except OSError:
                    continue
                self.seen.add(cmd.split(b"\0", 1)[0][-40:])
                if self.needle in cmd:
                    self.hits.append(cmd.replace(b"\0", b" ").decode(errors="replace"))
            self.sweeps += 1
            time.sleep(0.02)

    def saw(self, word: str) -> bool:
        """Whether a process whose argv[0] ends with `word` was sampled (proof of coverage)."""
        return any(p.endswith(word.encode()) for p in self.seen)

    def __enter__(self) -> CmdlineSampler:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._halt.set()
        self.join()
