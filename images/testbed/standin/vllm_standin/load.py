"""The model load every engine of the stand-in pretends to do (Ray, native and data-parallel
alike): vLLM's progress lines, paced by DGXCLUSTER_STANDIN_LOAD_S (default 2 s), failing at
once when `lost()` says a peer went away (a collective of the load would fail then).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable

from vllm_standin import NAME
from vllm_standin.dist import DistError


def float_env(name: str, default: float) -> float:
    """A DGXCLUSTER_STANDIN_* number, its default when unset or not a number."""
    try:
        return float(os.environ.get(name, default))
    except ValueError:
        return default


def load_model(model: str, log: logging.Logger,
               lost: Callable[[], str | None] = lambda: None) -> None:
    """vLLM's load lines over DGXCLUSTER_STANDIN_LOAD_S; DistError(lost()) once it says so."""
    seconds = float_env("DGXCLUSTER_STANDIN_LOAD_S", 2.0)
    log.info("Starting to load model %s... (%s: waiting %.1fs instead)", model, NAME, seconds)
    t = time.time()
    shards = max(1, int(seconds))
    for i in range(1, shards + 1):
        until = t + seconds * i / shards
        while time.time() < until:
            why = lost()
            if why:
                raise DistError(why)
            time.sleep(min(0.05, max(0.0, until - time.time())))
        log.info("Loading safetensors checkpoint shards: %3d%% Completed | %d/%d",
                 100 * i // shards, i, shards)
    log.info("Model loading took 0.0000 GiB and %.6f seconds", time.time() - t)
