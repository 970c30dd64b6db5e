"""The vLLM stand-in: a test double for `vllm serve` on the dgxcluster testbed.

Everything it prints says "vLLM stand-in", so nobody mistakes it for the engine.
Tunables (set them through the inventory's `container.env`):
  DGXCLUSTER_STANDIN_LOAD_S        seconds that stand for model loading (default 2)
  DGXCLUSTER_STANDIN_PG_TIMEOUT_S  placement-group wait, vLLM's PG_WAIT_TIMEOUT (default 1800)
  DGXCLUSTER_STANDIN_TOKEN_S       delay per generated token when streaming (default 0)
"""

VERSION = "0.0.0+standin"
NAME = "vLLM stand-in"
