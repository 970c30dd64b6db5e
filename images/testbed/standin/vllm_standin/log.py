"""Log lines shaped like vLLM's (`INFO 11-22 12:12:10 [file.py:123] message`) and uvicorn's."""

from __future__ import annotations

import logging
import sys


def setup() -> logging.Logger:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter(
        "%(levelname)s %(asctime)s [%(module)s.py:%(lineno)d] %(message)s", "%m-%d %H:%M:%S"))
    log = logging.getLogger("vllm")
    log.handlers[:] = [handler]
    log.setLevel(logging.INFO)
    log.propagate = False
    return log


def uvicorn(message: str) -> None:
    """uvicorn's own format, which users grep for ("Application startup complete")."""
    sys.stdout.write(f"INFO:     {message}\n")
    sys.stdout.flush()
