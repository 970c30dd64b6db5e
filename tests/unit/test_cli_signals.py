"""How dgxcluster's commands take signals (cli/state.py `interrupt_on_signals`), in real child
processes started with SIGINT ignored, as a non-interactive shell starts its background jobs:

- start/stop/build/model sync (`sigint="terminal"`) get SIGINT's default back when run
  attached to a terminal as its foreground job, so an operator's Ctrl-C always works; detached
  (stdin not a terminal), they keep the ignored SIGINT whoever started them chose;
- the followers (`sigint="always"`: status --watch, logs --follow, bench) get it back always;
- SIGTERM and SIGHUP raise KeyboardInterrupt in every case (a start rolls back).
"""

from __future__ import annotations

import os
import pty
import subprocess
import sys

import pytest

from tests.conftest import REPO

PROBE = """
import fcntl, os, signal, sys, termios
if sys.argv[2] == "tty":  # as a terminal's shell makes its foreground job: the controlling tty
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)
from dgxcluster.cli.state import attached_to_terminal, interrupt_on_signals
interrupt_on_signals(sigint=sys.argv[1])
h = signal.getsignal(signal.SIGINT)
term = signal.getsignal(signal.SIGTERM)
try:
    os.kill(os.getpid(), signal.SIGTERM)
    termed = "nothing"
except KeyboardInterrupt:
    termed = "KeyboardInterrupt"
print("attached" if attached_to_terminal() else "detached",
      "ignored" if h == signal.SIG_IGN else h.__name__, termed, flush=True)
"""


def probe(sigint: str, on_tty: bool) -> str:
    """The probe's line, started in a new session with SIGINT ignored; stdin a pseudo-terminal
    (made its controlling terminal) or /dev/null."""
    argv = ["env", "--ignore-signal=INT", sys.executable, "-c", PROBE, sigint,
            "tty" if on_tty else "none"]
    if not on_tty:
        p = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                           cwd=REPO, timeout=60, start_new_session=True)
        assert p.returncode == 0, p.stderr
        return p.stdout.strip()
    master, slave = pty.openpty()
    try:
        p = subprocess.run(argv, stdin=slave, capture_output=True, text=True, cwd=REPO,
                           timeout=60, start_new_session=True)
    finally:
        os.close(slave)
        os.close(master)
    assert p.returncode == 0, p.stderr
    return p.stdout.strip()


@pytest.mark.parametrize(("sigint", "on_tty", "expected"), [
    ("terminal", True, "attached default_int_handler KeyboardInterrupt"),
    ("terminal", False, "detached ignored KeyboardInterrupt"),
    ("always", False, "detached default_int_handler KeyboardInterrupt"),
    ("always", True, "attached default_int_handler KeyboardInterrupt"),
])
def test_sigint_comes_back_where_a_ctrl_c_can_be_typed(sigint: str, on_tty: bool,
                                                        expected: str) -> None:
    assert probe(sigint, on_tty) == expected
