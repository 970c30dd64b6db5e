#!/usr/bin/env python3
"""Which NCCL library torch (and so vLLM) loads in an image, against the image's system NCCL.

Why: a pip `nvidia-nccl-cu13` wheel and the image's apt `libnccl2` can both say 2.28.9 and
still be different builds; mixing them has hung TP=2 runs on DGX Sparks after about 20
minutes (vllm-project/vllm#41725, #42354). vLLM's pynccl opens `libnccl.so.2` after torch
(or VLLM_NCCL_SO_PATH), so the library torch mapped is the one vLLM uses.

Standalone (stdlib; torch if present): run inside the image from the node-side bundle,
`python3 nodeside.pyz nccl_libs` (verify-ib mounts the bundle into its tools container).
Needs no GPU: importing torch maps its NCCL. Prints one line: `dgxcluster-nccl-libs {json}`.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import re
import sys
from typing import Any

MARK = "dgxcluster-nccl-libs"
#: NCCL compiles "NCCL version X.Y.Z+cudaA.B" into the library (src/init.cc VERSION_STRING).
_VERSION = re.compile(rb"NCCL version (\d+\.\d+\.\d+[0-9A-Za-z.+-]*)")
SYSTEM_GLOBS = ("/usr/lib/*-linux-gnu/libnccl.so.2", "/usr/lib64/libnccl.so.2",
                "/usr/local/lib/libnccl.so.2")


def describe(path: str) -> dict[str, Any]:
    """Real path, size, sha256 and the version string compiled into one library file."""
    real = os.path.realpath(path)
    out: dict[str, Any] = {"path": path, "real": real}
    try:
        digest, version, tail = hashlib.sha256(), None, b""
        with open(real, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
                if version is None and (m := _VERSION.search(tail + chunk)):
                    version = m.group(1).decode("ascii", "replace")
                tail = chunk[-64:]
        out.update(size=os.path.getsize(real), sha256=digest.hexdigest(), version=version)
    except OSError as exc:
        out["error"] = str(exc)
    return out


def wheel_libs() -> list[str]:
    """`nvidia/nccl/lib/libnccl.so.2` of a pip wheel on sys.path, if any."""
    found = []
    for entry in sys.path:
        p = os.path.join(entry, "nvidia", "nccl", "lib", "libnccl.so.2")
        if entry and os.path.exists(p) and p not in found:
            found.append(p)
    return found


def mapped() -> list[str]:
    with open("/proc/self/maps") as fh:
        return sorted({ln.split()[-1] for ln in fh if "libnccl" in ln.rsplit("/", 1)[-1]})


def main(argv: list[str] | None = None) -> int:
    report: dict[str, Any] = {"vllm_nccl_so_path": os.environ.get("VLLM_NCCL_SO_PATH")}
    try:
        import torch  # type: ignore[import-not-found,unused-ignore]

        v = torch.cuda.nccl.version()
        report["torch"] = ".".join(str(x) for x in v) if isinstance(v, tuple) else str(v)
    except Exception as exc:  # whatever breaks (no torch, no CUDA build), report it
        report["torch_error"] = f"{type(exc).__name__}: {exc}"
    report["loaded"] = [describe(p) for p in mapped()]
    system = sorted({p for g in SYSTEM_GLOBS for p in glob.glob(g)})
    report["system"] = [describe(p) for p in system]
    report["wheel"] = [describe(p) for p in wheel_libs()]
    print(MARK, json.dumps(report, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
