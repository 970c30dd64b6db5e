"""The testbed's synthetic Hugging Face cache builder (scripts/testbed_lib/hfcache.py), for tests."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
from testbed_lib.hfcache import BUILD_SCRIPT, build_argv, spec

__all__ = ["BUILD_SCRIPT", "build_argv", "spec"]
