"""NCCL/GPU stand-in (testbed only): what `python3 -m torch.distributed.run ... nccl_probe.py`
prints in a CUDA image, replayed from real DGX Spark captures, because the testbed has no GPU,
no NCCL and no RDMA device. Everything it prints says "NCCL stand-in".

The ranks really meet: rank 0 listens on --master_addr:--master_port and every other rank
connects to it across the testbed's fabric, so a wrong fabric address or a blocked port fails
as torchrun does. Then each rank prints NCCL_DEBUG=INFO lines and rank 0 the result tables:
  DGXCLUSTER_STANDIN_NCCL=ngc-ibext  an NGC vLLM image's NCCL with the external IB plugin
      (IBext_v11) over the twins NCCL_IB_HCA names: both twins -> channels on both rails
      (capture: oshlabs/dgx-spark-cluster, prefixes restored in NCCL's format, src/debug.cc)
  DGXCLUSTER_STANDIN_NCCL=socket (default: what NCCL does in a container without
      /dev/infiniband, as every testbed container is) -> the TCP socket fallback
Set it through the inventory's `container.env`, as the vLLM stand-in's tunables are.
"""

from __future__ import annotations

import os
import re
import socket
import sys
import time
from pathlib import Path

NAME = "NCCL stand-in"
CAPTURES = Path(__file__).resolve().parent / "captures"
PROFILES = {
    "ngc-ibext": ("nccl_debug_IBext_v11_both_twins_ngc_vllm_26.03_dgx_spark_oshlabs.txt",
                  "nccl-tests_all_gather_perf_2x_dgx_spark_healthy_21.4GBs_jp_notebook.txt"),
    "socket": ("nccl_debug_NET_Socket_fallback_ABRIDGED_dgx_spark.txt",
               "nccl-tests_all_gather_perf_2x_dgx_spark_DEGRADED_2.8GBs_jp_notebook.txt"),
}
CAPTURE_TWINS = ("rocep1s0f0", "roceP2p1s0f0")  # the devices the IBext capture shows


def capture(name: str) -> str:
    """A capture without its source line (and without annotations after '  #')."""
    lines = (CAPTURES / name).read_text().splitlines()[1:]
    return "\n".join(re.sub(r"\s+# .*$", "", ln) for ln in lines if ln.strip() != "…") + "\n"


def hca_devices(value: str) -> list[str]:
    """Device names of an NCCL_IB_HCA value (`^`/`=` prefixes and `:port` dropped)."""
    v = value.strip().lstrip("^=")
    return [p.split(":")[0].strip() for p in v.split(",") if p.strip()]


def ibext_log(devices: list[str]) -> list[str]:
    """The IBext capture's lines for these twins: both -> channels alternate /0 and /1 as
    captured; one -> that device alone, every channel on /0."""
    devs = devices[:2] or list(CAPTURE_TWINS)
    out = []
    for line in capture(PROFILES["ngc-ibext"][0]).splitlines():
        if line.startswith("NET/IB : Using"):
            line = "NET/IB : Using " + " ".join(f"[{i}]{d}:1/RoCE" for i, d in enumerate(devs)) + " [RO]"
        elif len(devs) == 1:
            line = re.sub(r"via NET/(\w+)/\d+$", r"via NET/\1/0", line)
        out.append(line)
    return out


def socket_log(ifname: str) -> list[str]:
    lines = capture(PROFILES["socket"][0]).splitlines()
    return [ln.replace("enp1s0f0np0", ifname) if ifname else ln for ln in lines]


def nccl_lines(env: dict[str, str], host: str, pid: int) -> list[str]:
    """This rank's NCCL INFO lines, in NCCL's own prefix format (`host:pid:tid [dev] NCCL INFO`)."""
    profile = env.get("DGXCLUSTER_STANDIN_NCCL", "socket")
    if profile not in PROFILES:
        raise SystemExit(f"{NAME}: unknown DGXCLUSTER_STANDIN_NCCL={profile!r} ({', '.join(PROFILES)})")
    if env.get("NCCL_IB_DISABLE", "0") not in ("", "0"):
        profile = "socket"
    if profile == "ngc-ibext":
        body = ibext_log(hca_devices(env.get("NCCL_IB_HCA", "")))
    else:
        body = socket_log(env.get("NCCL_SOCKET_IFNAME", "").split(",")[0].lstrip("^="))
    prefix = f"{host}:{pid}:{pid} [0] NCCL INFO "
    return [prefix + ln.removeprefix("NCCL INFO ") for ln in body if ln.strip()]


def tables(profile: str) -> str:
    """all_gather rows as captured; all_reduce: the same rows relabelled (no Spark all_reduce
    capture exists; for 2 ranks all_reduce busbw = algbw, comparable), and said so."""
    gather = capture(PROFILES[profile][1])
    reduce = gather.replace("all_gather_perf", "all_reduce_perf").replace("    none ", "     sum ")
    return (f"# {NAME}: result rows replayed from {PROFILES[profile][1]}; all_reduce = the same "
            "rows relabelled\n" + gather + reduce)


def rendezvous(rank: int, nnodes: int, addr: str, port: int, timeout: float = 120.0) -> None:
    """Rank 0 accepts nnodes-1 connections on addr:port; the others connect (with retries)."""
    deadline = time.monotonic() + timeout
    if rank == 0:
        with socket.create_server((addr, port), reuse_port=False) as srv:
            srv.settimeout(timeout)
            peers = [srv.accept()[0] for _ in range(nnodes - 1)]
            for p in peers:
                p.sendall(b"go\n")
                p.close()
        return
    while True:
        try:
            with socket.create_connection((addr, port), timeout=5) as c:
                c.recv(3)
                return
        except OSError as exc:
            if time.monotonic() > deadline:
                raise SystemExit(f"torch.distributed.DistNetworkError: ({NAME}) could not reach "
                                 f"{addr}:{port}: {exc}") from None
            time.sleep(0.5)


def main(argv: list[str]) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="torch.distributed.run", description=f"{NAME}: torchrun double")
    ap.add_argument("--nnodes", type=int, default=1)
    ap.add_argument("--node_rank", "--node-rank", type=int, default=0)
    ap.add_argument("--nproc_per_node", "--nproc-per-node", type=int, default=1)
    ap.add_argument("--master_addr", "--master-addr", default="127.0.0.1")
    ap.add_argument("--master_port", "--master-port", type=int, default=29500)
    ap.add_argument("--standalone", action="store_true")
    ap.add_argument("script")
    ap.add_argument("args", nargs=argparse.REMAINDER)
    ns = ap.parse_args(argv)
    print(f"{NAME}: no GPU and no NCCL here; replaying DGX Spark captures", file=sys.stderr)
    rendezvous(ns.node_rank, ns.nnodes, ns.master_addr, ns.master_port)
    env = dict(os.environ)
    if env.get("NCCL_DEBUG", "").upper() == "INFO":
        for line in nccl_lines(env, socket.gethostname(), os.getpid()):
            print(line)
    if ns.node_rank == 0:
        profile = "socket" if env.get("NCCL_IB_DISABLE", "0") not in ("", "0") else \
            env.get("DGXCLUSTER_STANDIN_NCCL", "socket")
        print(tables(profile), end="")
    return 0
