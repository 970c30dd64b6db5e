"""The vLLM stand-in: a test double for `vllm serve` on the dgxcluster testbed.

Everything it prints says "vLLM stand-in", so nobody mistakes it for the engine.
Tunables (set them through the inventory's `container.env`; it takes exactly vLLM's flags):
  DGXCLUSTER_STANDIN_LOAD_S           seconds that stand for model loading (default 2)
  DGXCLUSTER_STANDIN_PG_TIMEOUT_S     placement-group wait, vLLM's PG_WAIT_TIMEOUT (default 1800)
  DGXCLUSTER_STANDIN_PREFILL_TPS      prompt tokens/s of one request alone (default 4000)
  DGXCLUSTER_STANDIN_DECODE_TPS       generated tokens/s of one request alone (default 50)
  DGXCLUSTER_STANDIN_BATCH_SLOWDOWN   per-request rates / (1 + s*(running-1)) (default 0.1)
  DGXCLUSTER_STANDIN_KV_CACHE_TOKENS  KV cache size in tokens (default 65536)
  DGXCLUSTER_STANDIN_TOKEN_S          older knob: seconds per generated token (1/decode rate)
See scheduler.py for the load model and metrics.py for /metrics.
"""

VERSION = "0.0.0+standin"
NAME = "vLLM stand-in"
