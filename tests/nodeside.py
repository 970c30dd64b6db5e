"""Run node-side programs here as a node runs them: `python3 nodeside-<hash>.pyz PROGRAM ...`,
from the very bundle `dgxcluster.core.ship` puts on nodes (so the packaging is tested too)."""

from __future__ import annotations

import functools
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from dgxcluster.core import ship


@functools.cache
def bundle() -> Path:
    """The bundle as a file, content-addressed like on a node (written once per content)."""
    path = Path(tempfile.gettempdir()) / f"dgxc-test-nodeside-{ship.digest()}.pyz"
    if not path.exists() or path.read_bytes() != ship.bundle():
        tmp = path.with_suffix(f".tmp-{id(path)}")
        tmp.write_bytes(ship.bundle())
        tmp.replace(path)
    return path


def argv(program: str, *args: str) -> list[str]:
    return [sys.executable, str(bundle()), program, *args]


def run(program: str, *args: str, stdin: bytes | None = None, timeout: float = 60,
        **kw: Any) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(argv(program, *args), input=stdin, capture_output=True,
                          timeout=timeout, check=False, **kw)
