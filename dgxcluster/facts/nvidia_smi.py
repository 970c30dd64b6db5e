"""`nvidia-smi` (the default table): driver and CUDA versions, each GPU's name and bus ID,
its temperature, power, memory and utilisation, and the processes holding a GPU.

On GB10 the memory cell reads "Not Supported" (CPU and GPU share LPDDR5x), so memory is
kept as text, not parsed as a number. A node without a working driver says "couldn't
communicate with the NVIDIA driver"; one without GPUs says "No devices were found".
A GPU takes two rows after the `|===|` rule:
`| 0  NVIDIA GB10   On | 0000000F:01:00.0 On | N/A |` then
`| N/A 45C P0  11W / N/A | Not Supported | 10% Default |`.
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
_TEMP = re.compile(r"(?P<t>-?\d+)C\b")
_POWER = re.compile(r"(?P<p>(?:\d+W|N/A)\s*/\s*(?:\d+W|N/A))")
_UTIL = re.compile(r"(?P<u>\d+)%")
_PROC = re.compile(
    r"^\|\s*(?P<gpu>\d+)\s+\S+\s+\S+\s+(?P<pid>\d+)\s+(?P<type>[A-Z+]+)\s+(?P<name>.+?)\s+"
    r"(?P<mem>\d+MiB|N/A)\s*\|$"
)


@dataclass(frozen=True)
class Gpu:
    index: int
    name: str
    bus_id: str
    temperature_c: int | None = None
    power: str = ""
    memory: str = ""
    utilization_pct: int | None = None


@dataclass(frozen=True)
class GpuProcess:
    gpu: int
    pid: int
    type: str  # C compute, G graphics, C+G
    name: str
    memory: str


@dataclass
class SmiInfo:
    driver: str | None = None
    cuda: str | None = None
    gpus: list[Gpu] = field(default_factory=list)
    error: str | None = None  # the tool's own words when it could not reach the driver
    processes: list[GpuProcess] = field(default_factory=list)


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def parse(text: str) -> SmiInfo:
    lines = content_lines(text)
    for needle in ("has failed", "couldn't communicate", "no devices were found"):
        hit = next((ln.strip() for ln in lines if needle in ln.lower()), None)
        if hit:
            return SmiInfo(error=None if needle == "no devices were found" else hit)
    info = SmiInfo()
    in_procs = False
    for i, line in enumerate(lines):
        if "Processes:" in line:
            in_procs = True
        if (m := _VERSIONS.search(line)) and info.driver is None:
            info.driver, info.cuda = m.group("drv"), m.group("cuda")
        elif in_procs and (p := _PROC.match(line.strip())):
            info.processes.append(GpuProcess(int(p.group("gpu")), int(p.group("pid")),
                                             p.group("type"), p.group("name"), p.group("mem")))
        elif not in_procs and (m := _GPU.match(line)):
            stats = _cells(lines[i + 1]) if i + 1 < len(lines) else []
            info.gpus.append(_gpu(m, stats))
    if info.driver is None:
        raise ParseError(COMMAND, "no 'NVIDIA-SMI ... Driver Version:' banner", text)
    return info


def _gpu(first: re.Match[str], stats: list[str]) -> Gpu:
    """The GPU's first row (index, name, bus) and its second row (temperature, power, ...)."""
    row = stats[0] if stats else ""
    temp = _TEMP.search(row)
    power = _POWER.search(row)
    util = _UTIL.search(stats[2]) if len(stats) > 2 else None
    return Gpu(
        index=int(first.group("idx")),
        name=first.group("name").strip(),
        bus_id=first.group("bus"),
        temperature_c=int(temp.group("t")) if temp else None,
        power=re.sub(r"\s+", " ", power.group("p")) if power else "",
        memory=stats[1] if len(stats) > 1 else "",
        utilization_pct=int(util.group("u")) if util else None,
    )


def read(text: str) -> SmiInfo:
    """Like `parse`, but unreadable output becomes `SmiInfo(error=...)` instead of raising
    (preflight reports it per node rather than stopping)."""
    try:
        return parse(text)
    except ParseError as exc:
        return SmiInfo(error=str(exc))
