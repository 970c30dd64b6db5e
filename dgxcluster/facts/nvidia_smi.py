"""`nvidia-smi` (the default table): driver and CUDA versions, each GPU's name, temperature,
power, memory and utilisation, and the processes holding a GPU.

The table is boxed with `|` and `+---+` rules. A GPU takes two (or three) rows after the
`|===|` rule: `| 0  NVIDIA GB10   On | 0000000F:01:00.0 On | N/A |` then
`| N/A 45C P0  11W / N/A | Not Supported | 10% Default |`. On a DGX Spark the memory cell
reads `Not Supported` (CPU and GPU share LPDDR5x), so memory is kept as text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from dgxcluster.facts import ParseError, content_lines

COMMAND = "nvidia-smi"


def argv() -> list[str]:
    return ["nvidia-smi"]


@dataclass(frozen=True)
class Gpu:
    index: int
    name: str
    temperature_c: int | None
    power: str
    memory: str
    utilization_pct: int | None


@dataclass(frozen=True)
class GpuProcess:
    gpu: int
    pid: int
    type: str
    name: str
    memory: str


@dataclass(frozen=True)
class NvidiaSmi:
    driver: str | None
    cuda: str | None
    gpus: tuple[Gpu, ...]
    processes: tuple[GpuProcess, ...]


_VERSIONS = re.compile(
    r"Driver Version:\s*(?P<driver>\S+)(?:\s+CUDA Version:\s*(?P<cuda>\S+))?"
)
_GPU_FIRST = re.compile(r"^\s*(?P<index>\d+)\s+(?P<name>.+?)\s+(?:On|Off)\s*$")
_TEMP = re.compile(r"(?P<t>-?\d+)C\b")
_POWER = re.compile(r"(?P<p>(?:\d+W|N/A)\s*/\s*(?:\d+W|N/A))")
_UTIL = re.compile(r"(?P<u>\d+)%")
_PROC = re.compile(
    r"^\s*(?P<gpu>\d+)\s+\S+\s+\S+\s+(?P<pid>\d+)\s+(?P<type>[A-Z+]+)\s+(?P<name>.+?)\s+"
    r"(?P<mem>\d+MiB|N/A)\s*$"
)
_FAILED = ("couldn't communicate with the nvidia driver", "no devices were found",
           "command not found", "not found")


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def parse(text: str) -> NvidiaSmi:
    lines = content_lines(text)
    driver = cuda = None
    for line in lines:
        if m := _VERSIONS.search(line):
            driver, cuda = m.group("driver"), m.group("cuda")
            break
    if driver is None:
        low = text.lower()
        reason = next((f for f in _FAILED if f in low), "no 'Driver Version' header")
        raise ParseError(COMMAND, reason, text)
    gpus: list[Gpu] = []
    procs: list[GpuProcess] = []
    in_procs = False
    for i, line in enumerate(lines):
        stripped = line.strip()
        if "Processes:" in stripped:
            in_procs = True
        if not stripped.startswith("|"):
            continue
        if in_procs:
            if m := _PROC.match(stripped.strip("|")):
                procs.append(GpuProcess(int(m.group("gpu")), int(m.group("pid")),
                                        m.group("type"), m.group("name"), m.group("mem")))
            continue
        cells = _cells(line)
        first = _GPU_FIRST.match(cells[0])
        if first and len(cells) >= 3 and i + 1 < len(lines):
            gpus.append(_gpu(first, _cells(lines[i + 1])))
    if not gpus:
        raise ParseError(COMMAND, "no GPU rows in the table", text)
    return NvidiaSmi(driver, cuda, tuple(gpus), tuple(procs))


def _gpu(first: re.Match[str], nxt: list[str]) -> Gpu:
    stats = nxt[0] if nxt else ""
    temp = _TEMP.search(stats)
    power = _POWER.search(stats)
    memory = nxt[1] if len(nxt) > 1 else ""
    util = _UTIL.search(nxt[2]) if len(nxt) > 2 else None
    return Gpu(
        index=int(first.group("index")),
        name=first.group("name").strip(),
        temperature_c=int(temp.group("t")) if temp else None,
        power=re.sub(r"\s+", " ", power.group("p")) if power else "",
        memory=memory,
        utilization_pct=int(util.group("u")) if util else None,
    )
