"""The run's log: structlog is imported only for an event that is shown (start-up cost)."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import sys
from dgxcluster.runlog import configure, get_logger
configure({verbosity})
log = get_logger(node="node1").bind(step="exec")
log.debug("remote.run", argv="true", exit=0)
print("imported" if "structlog" in sys.modules else "not imported")
"""


def _run(verbosity: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", SCRIPT.format(verbosity=verbosity)],
                          capture_output=True, text=True, timeout=60, check=True)


def test_an_event_below_the_level_neither_shows_nor_imports_structlog() -> None:
    quiet = _run(0)
    assert quiet.stdout.strip() == "not imported"
    assert quiet.stderr == ""


def test_an_event_at_the_level_is_shown_through_structlog_with_what_was_bound() -> None:
    verbose = _run(1)
    assert verbose.stdout.strip() == "imported"
    line = verbose.stderr.strip()
    assert "remote.run" in line and "node=node1" in line and "step=exec" in line, line
    assert "[debug" in line and "exit=0" in line, line
