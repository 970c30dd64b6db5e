#!/usr/bin/env python3
"""Snapshots of the GB10 image's base packages, and the check that the image's pip step
resolves against them, so a conflict fails the test suite instead of a user's 30 GB build.

The Dockerfile (images/vllm-gb10) installs `ray[default]==${RAY_VERSION}` with every package
of the base as a pip constraint (`pip list --format=freeze`) plus constraints.txt. This
resolves the same requirement, for the base's CPython and linux/aarch64, with uv, against a
committed snapshot of the base's packages (images/vllm-gb10/base-packages/<base>.txt; each
names its source and date in its header).

    scripts/base_packages.py from-image nvcr.io/nvidia/vllm:26.10-py3      # where the base is
    scripts/base_packages.py reconstruct nvcr.io/nvidia/vllm:26.10-py3 --vllm 0.31.0 \\
        --as-of 2026-10-15                                               # from release notes
    scripts/base_packages.py check [--ray 2.60.0] [--base IMAGE]          # what the test runs

`from-image` is the truth (`pip list --format=freeze` inside the image, as the build does);
`reconstruct` is the fallback where the image cannot be pulled (no registry, not arm64): the
vLLM version NVIDIA's release notes give for the tag, with its published requirements,
resolved with the newest packages up to a date. Its header says it is a reconstruction.
"""

from __future__ import annotations

import argparse
import datetime
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
IMAGE_DIR = REPO / "images" / "vllm-gb10"
SNAPSHOTS = IMAGE_DIR / "base-packages"
#: NGC vLLM images are Ubuntu 24.04 (glibc 2.39) on arm64 for DGX Spark.
PLATFORM = "aarch64-manylinux_2_39"
PYTHON = "3.12"
#: Words uv prints when it could not reach the index (as opposed to a resolution conflict).
_NETWORK = re.compile(r"(?i)failed to fetch|error sending request|dns error|connection (refused|reset)|"
                      r"network is unreachable|timed out|could not connect|offline")


@dataclass
class Snapshot:
    base: str
    python: str
    platform: str
    source: str
    pins: list[str] = field(default_factory=list)


@dataclass
class Resolution:
    ok: bool
    output: str
    network_error: bool = False
    pins: dict[str, str] = field(default_factory=dict)


def uv_binary() -> str:
    """uv from this virtualenv (a dev dependency), else from PATH."""
    here = Path(sys.executable).with_name("uv")
    found = str(here) if here.exists() else shutil.which("uv")
    if not found:
        raise SystemExit("base_packages: uv is not installed (pip install uv; scripts/bootstrap does)")
    return found


def snapshot_path(base: str) -> Path:
    """images/vllm-gb10/base-packages/nvcr.io_nvidia_vllm_26.10-py3.txt for that base (no digest)."""
    ref = base.split("@", 1)[0]
    return SNAPSHOTS / (re.sub(r"[/:]", "_", ref) + ".txt")


def read_snapshot(path: Path) -> Snapshot:
    head: dict[str, str] = {}
    pins = []
    for line in path.read_text().splitlines():
        if m := re.match(r"^# (\w+): (.*)$", line):
            head.setdefault(m.group(1), m.group(2))
        elif line.strip() and not line.startswith("#"):
            pins.append(line.strip())
    missing = [k for k in ("base", "source", "python", "platform") if k not in head]
    if missing:
        raise ValueError(f"{path}: header lacks {', '.join(missing)}")
    return Snapshot(head["base"], head["python"], head["platform"], head["source"], pins)


def dockerfile_defaults(dockerfile: Path = IMAGE_DIR / "Dockerfile") -> dict[str, str]:
    """Default values of the Dockerfile's ARGs (the runtime stage's win for repeated names)."""
    return {m.group(1): m.group(2).strip('"') for m in
            re.finditer(r"^ARG (\w+)=(\S+)$", dockerfile.read_text(), re.M)}


def dockerfile_requirements(args: dict[str, str], dockerfile: Path = IMAGE_DIR / "Dockerfile") -> list[str]:
    """The quoted requirements of the runtime stage's `pip install`, ARGs substituted."""
    text = dockerfile.read_text()
    step = re.search(r"python3 -m pip install(?:.*\\\n)*.*", text)
    reqs = re.findall(r'"([A-Za-z0-9_.\[\],-]+==\$\{(\w+)\})"', step.group(0))
    if step is None or not reqs:
        raise ValueError(f"{dockerfile}: no 'python3 -m pip install \"NAME==${{ARG}}\"' step")
    return [r.replace("${" + name + "}", args[name]) for r, name in reqs]


def resolve(requirements: list[str], snap: Snapshot, constraints: Path | None = None,
            uv: str | None = None, timeout: float = 300) -> Resolution:
    """`uv pip compile` of the requirements, every snapshot package a constraint, wheels only.

    uv's cache answers first (`--offline`, seconds); anything but success there (a cache
    miss, or a conflict a newer release might solve) is decided by the index itself."""
    with tempfile.TemporaryDirectory() as tmp:
        pins = Path(tmp, "base-constraints.txt")
        pins.write_text("\n".join(snap.pins) + "\n")
        argv = [uv or uv_binary(), "pip", "compile", "-", "--python-version", snap.python,
                "--python-platform", snap.platform, "--only-binary", ":all:", "--no-header",
                "--no-annotate", "--quiet", "-c", str(pins)]
        if constraints is not None and constraints.exists():
            argv += ["-c", str(constraints)]
        stdin = "\n".join(requirements) + "\n"
        p = subprocess.run(argv + ["--offline"], input=stdin, capture_output=True, text=True,
                           timeout=timeout, check=False)
        if p.returncode != 0:
            p = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=timeout,
                               check=False)
    out = (p.stdout + p.stderr).strip()
    if p.returncode != 0:
        return Resolution(False, out, network_error=bool(_NETWORK.search(p.stderr)) and
                          "No solution found" not in p.stderr)
    got = dict(ln.split("==", 1) for ln in p.stdout.splitlines() if "==" in ln and not ln.startswith("#"))
    return Resolution(True, out, pins=got)


def _write(path: Path, base: str, source: str, pins: list[str], python: str, platform: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    today = datetime.date.today().isoformat()
    head = [f"# base: {base}", f"# source: {source}", f"# python: {python}", f"# platform: {platform}",
            f"# written: {today} by scripts/base_packages.py"]
    path.write_text("\n".join(head + sorted(pins, key=str.lower)) + "\n")
    print(f"wrote {path} ({len(pins)} packages)")


def from_image(image: str, out: Path | None) -> int:
    """`pip list --format=freeze` inside the image (what the Dockerfile's constraint step runs)."""
    run = ["docker", "run", "--rm", "--entrypoint", "python3", image]
    freeze = subprocess.run(run + ["-m", "pip", "list", "--format=freeze"], capture_output=True,
                            text=True, check=True).stdout
    ver = subprocess.run(run + ["-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                         capture_output=True, text=True, check=True).stdout.strip()
    digest = subprocess.run(["docker", "image", "inspect", "--format", "{{index .RepoDigests 0}}",
                             image], capture_output=True, text=True, check=False).stdout.strip()
    pins = [ln for ln in freeze.splitlines() if "==" in ln]
    _write(out or snapshot_path(image), image, f"pip list --format=freeze inside {digest or image}",
           pins, ver, PLATFORM)
    return 0


def reconstruct(base: str, vllm: str, as_of: str, out: Path | None, python: str) -> int:
    """The release notes' vLLM with its published requirements, newest packages up to `as_of`."""
    argv = [uv_binary(), "pip", "compile", "-", "--python-version", python, "--python-platform",
            PLATFORM, "--exclude-newer", as_of, "--no-header", "--no-annotate", "--quiet"]
    p = subprocess.run(argv, input=f"vllm=={vllm}\n", capture_output=True, text=True, check=False)
    if p.returncode != 0:
        print(p.stderr, file=sys.stderr)
        return 1
    pins = [ln.strip() for ln in p.stdout.splitlines() if "==" in ln]
    source = (f"RECONSTRUCTED, not a pip freeze of the image: vLLM {vllm} (the version NVIDIA's "
              f"vLLM release notes give for this tag) with its published requirements, resolved by "
              f"uv for CPython {python} on {PLATFORM} with packages published up to {as_of}. NVIDIA "
              "builds torch, flashinfer and vLLM itself: their versions here are PyPI's. Replace it "
              "with 'scripts/base_packages.py from-image' where the image can be pulled")
    _write(out or snapshot_path(base), base, source, pins, python, PLATFORM)
    return 0


def check(base: str | None, ray: str | None) -> int:
    args = dockerfile_defaults()
    if ray:
        args["RAY_VERSION"] = ray
    base = base or args["BASE_IMAGE"]
    snap = read_snapshot(snapshot_path(base))
    reqs = dockerfile_requirements(args)
    res = resolve(reqs, snap, IMAGE_DIR / "constraints.txt")
    print(f"{' '.join(reqs)} against {base} ({snap.source[:60]}...): "
          f"{'resolves' if res.ok else 'DOES NOT RESOLVE'}")
    print(res.output)
    return 0 if res.ok else 1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("from-image", help="snapshot from pip inside the image (needs docker + image)")
    a.add_argument("image")
    a.add_argument("--out", type=Path)
    r = sub.add_parser("reconstruct", help="snapshot from the release notes' vLLM version")
    r.add_argument("base")
    r.add_argument("--vllm", required=True, help="vLLM version the release notes give")
    r.add_argument("--as-of", required=True, help="newest publication date (YYYY-MM-DD)")
    r.add_argument("--python", default=PYTHON)
    r.add_argument("--out", type=Path)
    c = sub.add_parser("check", help="resolve the Dockerfile's pip step against a snapshot")
    c.add_argument("--base", help="base image (default: the Dockerfile's BASE_IMAGE)")
    c.add_argument("--ray", help="RAY_VERSION (default: the Dockerfile's)")
    ns = ap.parse_args(argv)
    if ns.cmd == "from-image":
        return from_image(ns.image, ns.out)
    if ns.cmd == "reconstruct":
        return reconstruct(ns.base, ns.vllm, ns.as_of, ns.out, ns.python)
    return check(ns.base, ns.ray)


if __name__ == "__main__":
    sys.exit(main())
