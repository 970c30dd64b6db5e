"""Log lines shaped like vLLM's (`INFO 11-22 12:12:10 [file.py:123] message`) and uvicorn's."""

from __future__ import annotations

import logging
import sys

from vllm_standin import NAME


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


def process(name: str) -> logging.Logger:
    """A child process's lines carry vLLM's prefix: `(Worker_TP1 pid=7) INFO ...`,
    `(EngineCore_DP1 pid=7) INFO ...`."""
    logger = logging.getLogger(f"vllm.process.{name}")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter(
            f"({name} pid=%(process)d) %(levelname)s %(asctime)s [%(module)s.py:%(lineno)d] "
            "%(message)s", "%m-%d %H:%M:%S"))
        logger.handlers[:] = [handler]
        logger.setLevel(logging.INFO)
        logger.propagate = False
    return logger


def traceback(line: str, where: str) -> None:
    """A failure as Python prints it, `where` naming the vLLM code the stand-in emulates."""
    sys.stdout.write(f"Traceback (most recent call last):\n  ({where}, emulated by the {NAME})\n"
                     f"{line}\n")
    sys.stdout.flush()
