"""The NCCL-library check: the probe that runs in the image (on stand-in library files, as no
real libnccl is here), its parser, and the verdict (vllm-project/vllm#41725: a pip wheel and
the system libnccl2 both '2.28.9' but different builds hung TP=2 on DGX Sparks)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from dgxcluster.facts import ParseError, nccl_libs
from dgxcluster.nodeside import nccl_libs as probe
from dgxcluster.verify.nccl_library import judge
from dgxcluster.verify.results import Level

WHEEL = "/usr/local/lib/python3.12/dist-packages/nvidia/nccl/lib/libnccl.so.2"
SYSTEM = "/usr/lib/aarch64-linux-gnu/libnccl.so.2"


def lib_file(tmp_path: Path, name: str, payload: bytes) -> Path:
    """A stand-in library: filler around the version string NCCL compiles in (init.cc)."""
    f = tmp_path / name
    f.write_bytes(b"\x7fELF" + b"\0" * (1 << 20) + payload + b"\0" * 4096)
    return f


def test_describe_reads_version_and_identity(tmp_path: Path) -> None:
    a = lib_file(tmp_path, "libnccl.so.2.28.9", b"NCCL version 2.28.9+cuda13.0\0")
    link = tmp_path / "libnccl.so.2"
    link.symlink_to(a.name)
    d = probe.describe(str(link))
    assert d["version"] == "2.28.9+cuda13.0" and d["real"] == str(a) and d["size"] == a.stat().st_size
    assert len(d["sha256"]) == 64
    assert "error" in probe.describe(str(tmp_path / "missing"))


def test_probe_runs_as_python_c_and_prints_one_report() -> None:
    # As verify-ib runs it in the image (`python3 -c "$1"`), here without torch.
    p = subprocess.run([sys.executable, "-c", Path(probe.__file__).read_text()],
                       capture_output=True, text=True, check=False)
    assert p.returncode == 0, p.stderr
    report = nccl_libs.parse("have ib_write_bw\n" + p.stdout)
    assert report.torch is None and report.torch_error is not None


def report(loaded: list[dict[str, object]], system: list[dict[str, object]], torch: str | None = "2.28.9",
           **extra: object) -> nccl_libs.NcclLibs:
    data = {"torch": torch, "loaded": loaded, "system": system, "wheel": [], **extra}
    return nccl_libs.parse(f"have torch\n{probe.MARK} {json.dumps(data)}\n")


WHEEL_LIB = {"path": WHEEL, "real": WHEEL, "version": "2.28.9+cuda13.0", "sha256": "a7" * 32,
             "size": 219_000_000}
SYSTEM_LIB = {"path": SYSTEM, "real": "/usr/lib/aarch64-linux-gnu/libnccl.so.2.28.9",
              "version": "2.28.9+cuda13.0", "sha256": "c0" * 32, "size": 190_000_000}


def test_same_version_different_build_warns_with_both_and_the_fix() -> None:
    (r,) = judge(report([WHEEL_LIB], [SYSTEM_LIB]), "dgxcluster/vllm-gb10:current")
    assert r.status == Level.WARN and r.check == "nccl-library"
    assert f"loads NCCL 2.28.9+cuda13.0 ({WHEEL})" in r.detail
    assert f"system NCCL is NCCL 2.28.9+cuda13.0 ({SYSTEM}) (same version, different build)" in r.detail
    assert "vllm-project/vllm#41725" in r.detail
    assert f"ln -sf {SYSTEM} {WHEEL}" in r.fix


def test_torch_on_the_system_library_passes() -> None:
    same = dict(SYSTEM_LIB, path=SYSTEM_LIB["real"])
    (r,) = judge(report([same], [SYSTEM_LIB]), "img")
    assert r.status == Level.PASS and "loads the image's system NCCL 2.28.9+cuda13.0" in r.detail
    copy = dict(WHEEL_LIB, sha256=SYSTEM_LIB["sha256"])  # byte-identical copy: one build
    assert judge(report([copy], [SYSTEM_LIB]), "img")[0].status == Level.PASS
    (alone,) = judge(report([WHEEL_LIB], []), "img")
    assert alone.status == Level.PASS and "has no system libnccl" in alone.detail


def test_nothing_mapped_two_mapped_and_no_torch() -> None:
    assert judge(report([], [SYSTEM_LIB]), "img")[0].status == Level.WARN
    (two,) = judge(report([WHEEL_LIB, SYSTEM_LIB], [SYSTEM_LIB]), "img")
    assert two.status == Level.WARN and "several NCCL libraries" in two.detail
    assert judge(report([WHEEL_LIB], [SYSTEM_LIB], torch=None), "img") == []
    (o,) = judge(report([WHEEL_LIB], [SYSTEM_LIB], vllm_nccl_so_path="/x/libnccl.so.2"), "img")
    assert "VLLM_NCCL_SO_PATH=/x/libnccl.so.2" in o.detail


@pytest.mark.parametrize("text", ["", "have torch\n", f"{probe.MARK} nope\n", f"{probe.MARK} []\n",
                                  f'{probe.MARK} {{"loaded": [{{"x": 1}}]}}\n'])
def test_parse_garbage(text: str) -> None:
    with pytest.raises(ParseError, match="could not parse nccl-libs probe output"):
        nccl_libs.parse(text)
