"""`nvidia-smi` (the default table): driver and CUDA versions, and each GPU's name.

On GB10 the memory cell reads "Not Supported" (CPU and GPU share LPDDR5x), so it is not
parsed as a number. A node without a working driver says "couldn't communicate with the
NVIDIA driver"; one without GPUs says "No devices were found".
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from dgxcluster.facts import ParseError, content_lines

ARGV = ["nvidia-smi"]
COMMAND = "nvidia-smi"

_VERSIONS = re.compile(r"NVIDIA-SMI\s+(?P<smi>\S+).*?Driver Version:\s*(?P<drv>\S+)"
                       r"(?:.*?CUDA Version:\s*(?P<cuda>[\w.]+))?")
_GPU = re.compile(r"^\|\s*(?P<idx>\d+)\s+(?P<name>.+?)\s+(?:On|Off)\s+\|\s*"
                  r"(?P<bus>[0-9A-Fa-f]{4,8}:[0-9A-Fa-f]{2}:[0-9A-Fa-f]{2}\.[0-9A-Fa-f])")


@dataclass(frozen=True)
class Gpu:
    index: int
    name: str
    bus_id: str


@dataclass
class SmiInfo:
    driver: str | None = None
    cuda: str | None = None
    gpus: list[Gpu] = field(default_factory=list)
    error: str | None = None  # the tool's own words when it could not reach the driver


def parse(text: str) -> SmiInfo:
    lines = content_lines(text)
    for needle in ("has failed", "couldn't communicate", "no devices were found"):
        hit = next((ln.strip() for ln in lines if needle in ln.lower()), None)
        if hit:
            return SmiInfo(error=None if needle == "no devices were found" else hit)
    info = SmiInfo()
    for line in lines:
        if (m := _VERSIONS.search(line)) and info.driver is None:
            info.driver, info.cuda = m.group("drv"), m.group("cuda")
        elif m := _GPU.match(line):
            info.gpus.append(Gpu(int(m.group("idx")), m.group("name").strip(), m.group("bus")))
    if info.driver is None:
        raise ParseError(COMMAND, "no 'NVIDIA-SMI ... Driver Version:' banner", text)
    return info


def read(text: str) -> SmiInfo:
    """Like `parse`, but unreadable output becomes `SmiInfo(error=...)` instead of raising
    (preflight reports it per node rather than stopping)."""
    try:
        return parse(text)
    except ParseError as exc:
        return SmiInfo(error=str(exc))
