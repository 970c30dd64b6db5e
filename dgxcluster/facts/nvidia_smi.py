"""`nvidia-smi` (the default table): which GPUs the node's driver sees."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

COMMAND = ["nvidia-smi"]

# "|   0  NVIDIA GB10                    On  |   0000000F:01:00.0  On |   N/A |"
_GPU_ROW = re.compile(r"^\|\s+(\d+)\s+(.+?)\s+(On|Off)\s+\|\s+([0-9A-Fa-f:.]+)\s")
_DRIVER = re.compile(r"Driver Version:\s*([0-9.]+)")
_CUDA = re.compile(r"CUDA Version:\s*([0-9.]+)")


@dataclass(frozen=True)
class Gpu:
    index: int
    name: str
    bus_id: str


@dataclass(frozen=True)
class NvidiaSmi:
    gpus: list[Gpu] = field(default_factory=list)
    driver: str | None = None
    cuda: str | None = None
    error: str | None = None


def parse(text: str) -> NvidiaSmi:
    if "NVIDIA-SMI" not in text:
        first = next((ln.strip() for ln in text.splitlines() if ln.strip()), "(no output)")
        return NvidiaSmi(error=f"could not parse `nvidia-smi`: {first}")
    gpus: list[Gpu] = []
    for line in text.splitlines():
        if "Processes:" in line:
            break
        m = _GPU_ROW.match(line)
        if m:
            gpus.append(Gpu(int(m.group(1)), m.group(2).strip(), m.group(4)))
    drv = _DRIVER.search(text)
    cuda = _CUDA.search(text)
    return NvidiaSmi(gpus=gpus, driver=drv.group(1) if drv else None,
                     cuda=cuda.group(1) if cuda else None)
