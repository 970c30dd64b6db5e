"""Import the scripts/ modules (testbed_lib, base_packages) from tests."""

from __future__ import annotations

import sys
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
if str(SCRIPTS) not in sys.path:
    sys.path.insert(0, str(SCRIPTS))

import base_packages  # noqa: E402

__all__ = ["SCRIPTS", "base_packages"]
