"""`nccl-library`: the NCCL build vLLM (through torch) loads in the image is the image's own.

A pip NCCL wheel and the system `libnccl2` can report the same version and still be
different builds; mixing them has hung TP=2 on DGX Sparks after ~20 minutes, fixed by
pointing the wheel's library at the system one (vllm-project/vllm#41725, #42354). Pure:
the probe's report (`facts.nccl_libs`) in, a `CheckResult` out. Both versions are reported.
"""

from __future__ import annotations

from dgxcluster.facts.nccl_libs import Lib, NcclLibs
from dgxcluster.verify.results import CLUSTER, CheckResult, Checks

CHECK = "nccl-library"
ISSUE = "vllm-project/vllm#41725"


def _fix(loaded: Lib, system: Lib) -> str:
    return (f"make torch load the system build: in the image, `ln -sf {system.path} {loaded.path}` "
            f"(the fix reported in {ISSUE}), then rebuild with dgxcluster build")


def judge(libs: NcclLibs, image: str) -> list[CheckResult]:
    c = Checks(CLUSTER)
    if libs.torch is None:
        return c.results  # no torch: the bandwidth checks already say so
    if not libs.loaded:
        c.warn(CHECK, f"torch (NCCL {libs.torch}) in {image} mapped no libnccl file this probe "
               "could see", "check `ldd` of torch's libtorch_cuda.so in the image")
        return c.results
    loaded = libs.loaded[0]
    if len({x.real for x in libs.loaded}) > 1:
        c.warn(CHECK, "one process mapped several NCCL libraries: "
               + ", ".join(x.label() for x in libs.loaded), f"keep one NCCL in the image ({ISSUE})")
        return c.results
    override = (f"; VLLM_NCCL_SO_PATH={libs.vllm_nccl_so_path}" if libs.vllm_nccl_so_path else "")
    if not libs.system:
        c.ok(CHECK, f"vLLM (torch {libs.torch}) loads {loaded.label()}; {image} has no system "
             f"libnccl{override}")
        return c.results
    system = libs.system[0]
    if loaded.same_build(system):
        c.ok(CHECK, f"vLLM (torch) loads the image's system {system.label()}{override}")
        return c.results
    same = " (same version, different build)" if loaded.version == system.version else ""
    c.warn(CHECK, f"vLLM (torch) loads {loaded.label()}, but the image's system NCCL is "
           f"{system.label()}{same}{override}: mismatched NCCL builds have hung TP=2 runs after "
           f"about 20 minutes ({ISSUE})", _fix(loaded, system))
    return c.results


#: The first NCCL release with NCCL_IB_SUBNET_AWARE_ROUTING (NVIDIA/nccl commit 5c1c4288,
#: "Add subnet-aware routing for DGX Spark multi-node ring connection", first in v2.30.7-1).
SUBNET_ROUTING_SINCE = (2, 30, 7)
SUBNET_CHECK = "nccl-subnet-routing"


def _version(text: str | None) -> tuple[int, ...] | None:
    try:
        return tuple(int(x) for x in (text or "").split("+")[0].split(".")[:3])
    except ValueError:
        return None


def subnet_routing(libs: NcclLibs, image: str, point_to_point: bool) -> list[CheckResult]:
    """On a ring or mesh NCCL must pick the port on the peer's subnet, which only NCCL
    2.30.7+ does (NCCL_IB_SUBNET_AWARE_ROUTING); older ones time out in ibv_modify_qp."""
    c = Checks(CLUSTER)
    if not point_to_point or libs.torch is None:
        return c.results
    loaded = libs.loaded[0].version if libs.loaded else libs.torch
    have = _version(loaded)
    want = ".".join(map(str, SUBNET_ROUTING_SINCE))
    if have is None:
        c.warn(SUBNET_CHECK, f"cannot tell the NCCL version vLLM loads in {image} ({loaded!r}); "
               f"a ring or mesh needs NCCL {want}+", f"use an image whose NCCL is {want} or newer")
    elif have < SUBNET_ROUTING_SINCE:
        c.fail(SUBNET_CHECK, f"vLLM loads NCCL {loaded} in {image}: NCCL_IB_SUBNET_AWARE_ROUTING "
               f"(a ring or mesh, each cable its own subnet) exists from NCCL {want}; older NCCL "
               "connects through the wrong port (ibv_modify_qp ... 110, a QP timeout)",
               f"use an image with NCCL {want} or newer")
    else:
        c.ok(SUBNET_CHECK, f"NCCL {loaded} has NCCL_IB_SUBNET_AWARE_ROUTING (since {want})")
    return c.results
