"""The report of `dgxcluster/nodeside/nccl_libs.py`: which libnccl torch (so vLLM) loads in
the image, and the image's system and pip-wheel copies (path, version, size, sha256)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from dgxcluster.facts import ParseError

COMMAND = "nccl-libs probe"
MARK = "dgxcluster-nccl-libs"


@dataclass(frozen=True)
class Lib:
    path: str
    real: str
    version: str | None = None
    sha256: str | None = None
    size: int | None = None
    error: str | None = None

    def same_build(self, other: Lib) -> bool:
        """The same file, or byte-identical copies."""
        return self.real == other.real or (self.sha256 is not None and self.sha256 == other.sha256)

    def label(self) -> str:
        return f"NCCL {self.version or '?'} ({self.path})"


@dataclass
class NcclLibs:
    torch: str | None = None  # torch.cuda.nccl.version(), e.g. "2.28.9"
    torch_error: str | None = None
    vllm_nccl_so_path: str | None = None
    loaded: list[Lib] = field(default_factory=list)
    system: list[Lib] = field(default_factory=list)
    wheel: list[Lib] = field(default_factory=list)


def _libs(raw: Any, text: str) -> list[Lib]:
    if not isinstance(raw, list):
        raise ParseError(COMMAND, "expected lists of libraries", text)
    out = []
    for item in raw:
        if not isinstance(item, dict) or not isinstance(item.get("path"), str):
            raise ParseError(COMMAND, "a library entry has no path", text)
        size = item.get("size")
        out.append(Lib(path=item["path"], real=str(item.get("real") or item["path"]),
                       version=item.get("version") or None, sha256=item.get("sha256") or None,
                       size=size if isinstance(size, int) else None, error=item.get("error")))
    return out


def parse(text: str) -> NcclLibs:
    """The probe's line, wherever it sits in the container's output."""
    line = next((ln for ln in text.splitlines() if ln.startswith(MARK + " ")), None)
    if line is None:
        raise ParseError(COMMAND, f"no '{MARK}' line", text)
    try:
        data = json.loads(line[len(MARK) + 1:])
    except ValueError:
        raise ParseError(COMMAND, "not JSON", text) from None
    if not isinstance(data, dict):
        raise ParseError(COMMAND, "expected a JSON object", text)
    return NcclLibs(torch=data.get("torch"), torch_error=data.get("torch_error"),
                    vllm_nccl_so_path=data.get("vllm_nccl_so_path"),
                    loaded=_libs(data.get("loaded", []), text),
                    system=_libs(data.get("system", []), text),
                    wheel=_libs(data.get("wheel", []), text))
