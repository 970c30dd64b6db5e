"""Will the model fit? A per-node memory estimate before anything starts.

On a DGX Spark the GPU and the CPU share one memory (128 GB, or 64 GB on the smaller Spark),
and asking for too much does not fail cleanly: the box can freeze (NVIDIA dgx-spark-playbooks
issue #102, #97). vLLM takes `gpu_memory_utilization x total` for itself; the weights (the
safetensors files, split over TP x PP ranks, one rank per node) must fit in it with room left
for activations and the KV cache. This is an estimate from file sizes, stated with its numbers,
not a promise: MoE routing buffers, CUDA graphs and the page cache while loading also take memory.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from dgxcluster.core.units import human_bytes
from dgxcluster.inventory import schema

GIB = 1024**3

# NVIDIA's vLLM container release notes (26.01-26.05, "Known Issues"): `vllm serve` allocates
# aggressively by default (effectively --gpu-memory-utilization ~1.0) and on shared/unified
# memory (DGX Spark, Jetson) this can run out of memory. NVIDIA's two-Spark playbook passes 0.8.
# It is serve.gpu_memory_utilization's default (the inventory's schema holds the number).
SAFE_GPU_MEMORY_UTILIZATION = schema.SAFE_GPU_MEMORY_UTILIZATION
# Above this, vLLM's start-up check tends to fail on a 128 GB Spark: free CUDA memory at boot
# caps near 102 of 121.7 GiB even headless with caches dropped (MiaAI-Lab GLM-5.3 issue #47).
STARTUP_CEILING = 0.83
# Memory a node's CUDA reports in all, per Spark variant (gpud PR #1170 reads 128501256192 B on
# a 128 GB Spark). The 64 GB figure is the same fraction of 64 GB; read the node when you can.
NOMINAL_TOTAL = {128: 128_501_256_192, 64: 64_250_628_096}
# Activations, CUDA graphs, NCCL buffers and the CUDA context per rank: an allowance, not a
# measurement (vLLM profiles it at start; a few GiB for the models in recipes/).
DEFAULT_OVERHEAD = 4 * GIB
# Less KV cache than this and vLLM starts but cannot hold a useful context.
MIN_KV = 1 * GIB


@dataclass(frozen=True)
class Fit:
    fits: bool
    weights_bytes: int
    per_node_weights: int
    budget: int
    overhead: int
    kv_cache: int
    total: int
    gpu_memory_utilization: float
    ranks: int
    warnings: tuple[str, ...] = ()

    def summary(self) -> str:
        verdict = "fits" if self.fits else "does not fit"
        return (f"{verdict}: weights {_g(self.weights_bytes)} / {self.ranks} rank(s) = "
                f"{_g(self.per_node_weights)} per node; vLLM's share {self.gpu_memory_utilization:g} x "
                f"{_g(self.total)} = {_g(self.budget)}; minus ~{_g(self.overhead)} overhead leaves "
                f"{_g(self.kv_cache)} for the KV cache")


def _g(n: int) -> str:
    return human_bytes(n, binary=True)


def safetensors_bytes(files: Mapping[str, int]) -> int:
    """Bytes of the weight files among a snapshot's {path: size} (what vLLM loads)."""
    return sum(size for path, size in files.items() if path.endswith(".safetensors"))


def estimate(weights_bytes: int, *, tensor_parallel_size: int, pipeline_parallel_size: int = 1,
             total_bytes: int, gpu_memory_utilization: float | None = None,
             overhead_bytes: int = DEFAULT_OVERHEAD) -> Fit:
    """Per-node memory for serving weights of `weights_bytes` over TP x PP nodes."""
    util = gpu_memory_utilization if gpu_memory_utilization is not None else SAFE_GPU_MEMORY_UTILIZATION
    ranks = tensor_parallel_size * pipeline_parallel_size
    per_node = -(-weights_bytes // ranks)
    budget = int(util * total_bytes)
    kv = budget - per_node - overhead_bytes
    warnings = []
    if util > STARTUP_CEILING:
        warnings.append(f"--gpu-memory-utilization {util:g} is above {STARTUP_CEILING:g}: on a DGX Spark "
                        f"vLLM's start-up check often finds less free memory than that and refuses to "
                        f"start; {SAFE_GPU_MEMORY_UTILIZATION:g} is what NVIDIA's playbook uses")
    return Fit(fits=kv >= MIN_KV, weights_bytes=weights_bytes, per_node_weights=per_node,
               budget=budget, overhead=overhead_bytes, kv_cache=kv, total=total_bytes,
               gpu_memory_utilization=util, ranks=ranks, warnings=tuple(warnings))
