"""NCCL/GPU stand-in (testbed only): what `python3 -m torch.distributed.run ... nccl_probe.py`
prints in a CUDA image, replayed from real DGX Spark captures, because the testbed has no GPU,
no NCCL and no RDMA device. Everything it prints says "NCCL stand-in".

The ranks really meet: rank 0 listens on --master_addr:--master_port and every other rank
connects to it across the testbed's fabric (sending its rank and hostname), so a wrong
address or a blocked port fails as torchrun does. Then each rank prints NCCL_DEBUG=INFO lines
and rank 0 the result tables for the --nnodes ranks that met:
  DGXCLUSTER_STANDIN_NCCL=ngc-ibext  an NGC vLLM image's NCCL with the external IB plugin
      (IBext_v11) over the twins NCCL_IB_HCA names: both twins -> channels on both rails
      (capture: oshlabs/dgx-spark-cluster, prefixes restored in NCCL's format, src/debug.cc).
      With NCCL_NET_PLUGIN=none NCCL loads no plugin and uses its internal IB transport, as
      on a ring: the NCCL 2.28.9 NET/IB capture, over every device NCCL_IB_HCA names.
  DGXCLUSTER_STANDIN_NCCL=socket (default: what NCCL does in a container without
      /dev/infiniband, as every testbed container is) -> the TCP socket fallback
Set it through the inventory's `container.env`, as the vLLM stand-in's tunables are.

The result rows for N ranks: the capture (2 ranks) gives the bus bandwidth B each link
carried per size; busbw does not depend on N in a ring (nccl-tests doc/PERFORMANCE.md), so
N ranks take time = size * factor(op, N) / B, and algbw = size / time, busbw = algbw *
factor, with factor = (N-1)/N for all_gather and 2(N-1)/N for all_reduce.
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
#: NCCL's internal IB transport (NCCL_NET_PLUGIN=none): a real 2-node NCCL 2.28.9 init log.
INTERNAL_IB = "nccl_debug_NET_IB_init_dgx_spark_2node.log"
CAPTURE_TWINS = ("rocep1s0f0", "roceP2p1s0f0")  # the devices the IBext capture shows
ROW = re.compile(r"^\s*(\d+)\s+(\d+)\s+(\S+)\s+(\S+)\s+(-?\d+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)"
                 r"\s+(\d+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+(\d+)\s*$")


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


def internal_ib_log(devices: list[str], rank: int, nranks: int, ifname: str = "",
                    ip: str = "") -> list[str]:
    """NCCL's own IB transport: the capture's INFO lines of one host, `Using` over the devices
    NCCL_IB_HCA names with this rank's bootstrap interface (NCCL_SOCKET_IFNAME) as OOB, this
    rank's `rank R nranks N`; then one send channel per device."""
    devs = devices or ["rocep1s0f1", "roceP2p1s0f1"]
    out = []
    for line in capture(INTERNAL_IB).splitlines():
        m = re.match(r"^spark-fb97:\d+:\d+ \[\d+\] NCCL INFO (.*)$", line)
        if not m:
            continue
        body = m.group(1)
        if ifname:
            body = body.replace("NCCL_SOCKET_IFNAME set to enp1s0f1np1",
                                f"NCCL_SOCKET_IFNAME set to {ifname}")
        if body.startswith("NET/IB : Using"):
            oob = f" {ifname}:{ip or '?'}<0>" if ifname else body.partition("; OOB")[2]
            body = ("NET/IB : Using " + " ".join(f"[{i}]{d}:1/RoCE" for i, d in enumerate(devs))
                    + " [RO]" + (f"; OOB{oob}" if oob else ""))
        body = re.sub(r"\brank \d+ nranks \d+", f"rank {rank} nranks {nranks}", body)
        if body.startswith(("NET/IB: [", "NET/IB : Made virtual device", "NET/IB : GPU Direct")):
            continue  # per-device lines of the captured twins only
        out.append(body)
    nxt = (rank + 1) % nranks
    out += [f"Channel {i:02d}/0 : {rank}[0] -> {nxt}[0] [send] via NET/IB/{i}"
            for i in range(len(devs))]
    out += [f"NET/IB : GPU Direct RDMA Disabled for HCA {i} '{d}'" for i, d in enumerate(devs)]
    return out


def socket_log(ifname: str) -> list[str]:
    lines = capture(PROFILES["socket"][0]).splitlines()
    return [ln.replace("enp1s0f0np0", ifname) if ifname else ln for ln in lines]


def profile_of(env: dict[str, str]) -> str:
    profile = env.get("DGXCLUSTER_STANDIN_NCCL", "socket")
    if profile not in PROFILES:
        raise SystemExit(f"{NAME}: unknown DGXCLUSTER_STANDIN_NCCL={profile!r} ({', '.join(PROFILES)})")
    return "socket" if env.get("NCCL_IB_DISABLE", "0") not in ("", "0") else profile


def nccl_lines(env: dict[str, str], host: str, pid: int, rank: int = 0,
               nranks: int = 2) -> list[str]:
    """This rank's NCCL INFO lines, in NCCL's own prefix format (`host:pid:tid [dev] NCCL INFO`)."""
    profile = profile_of(env)
    if profile == "ngc-ibext" and env.get("NCCL_NET_PLUGIN", "").lower() == "none":
        body = ["NCCL_NET_PLUGIN set by environment to none",
                *internal_ib_log(hca_devices(env.get("NCCL_IB_HCA", "")), rank, nranks,
                                 env.get("NCCL_SOCKET_IFNAME", "").lstrip("^="),
                                 env.get("VLLM_HOST_IP", ""))]
    elif profile == "ngc-ibext":
        body = ibext_log(hca_devices(env.get("NCCL_IB_HCA", "")))
    else:
        body = socket_log(env.get("NCCL_SOCKET_IFNAME", "").split(",")[0].lstrip("^="))
    prefix = f"{host}:{pid}:{pid} [0] NCCL INFO "
    return [prefix + ln.removeprefix("NCCL INFO ") for ln in body if ln.strip()]


def factor(op: str, nranks: int) -> float:
    """busbw / algbw (nccl-tests doc/PERFORMANCE.md)."""
    return (nranks - 1) / nranks * (2.0 if op == "all_reduce" else 1.0)


def _cell(us: float, size: int, op: str, nranks: int) -> str:
    alg = size / 1e9 / (us / 1e6)
    return f"  {us:7.1f}  {alg:6.2f}  {alg * factor(op, nranks):6.2f}  {0:6d}"


def rows_for(captured: str, op: str, nranks: int) -> list[str]:
    """The captured rows, re-timed for `nranks` ranks at each size's captured busbw."""
    out = []
    for ln in captured.splitlines():
        m = ROW.match(ln)
        if not m:
            continue
        size, count = int(m.group(1)), int(m.group(2))
        times = []
        for bus in (float(m.group(8)), float(m.group(12))):
            times.append(size * factor(op, nranks) / (bus * 1e9) * 1e6)
        if op == "all_gather":
            count = size // 4 // nranks
        else:
            count = size // 4
        redop = "sum" if op == "all_reduce" else "none"
        out.append(f"{size:12d}  {count:12d}  {'float':>8}  {redop:>6}  {-1:6d}"
                   + _cell(times[0], size, op, nranks) + _cell(times[1], size, op, nranks))
    return out


def tables(profile: str, hosts: list[str] | None = None) -> str:
    """nccl-tests' all_gather and all_reduce tables for len(hosts) ranks (2 by default)."""
    hosts = hosts or ["node1", "node2"]
    n = len(hosts)
    captured = capture(PROFILES[profile][1])
    header = [ln for ln in captured.splitlines() if ln.startswith("#  ") and "size" in ln
              or ln.startswith("#        (B)") or "out-of-place" in ln]
    out = [f"# {NAME}: {n} ranks; rows re-timed from {PROFILES[profile][1]} at its busbw"]
    for op in ("all_gather", "all_reduce"):
        rows = rows_for(captured, op, n)
        avg = sum(float(r.split()[7]) + float(r.split()[11]) for r in rows) / (2 * len(rows))
        out += [f"# Collective test starting: {op}_perf", "#", "# Using devices"]
        out += [f"#  Rank {r:2d} Group  0 Pid {1000 + r:6d} on {h:>10} device  0 [000f:01:00] "
                "NVIDIA GB10" for r, h in enumerate(hosts)]
        out += ["#", *header, *rows, "# Out of bounds values : 0 OK",
                f"# Avg bus bandwidth    : {avg:g} ", "#",
                f"# Collective test concluded: {op}_perf", "#"]
    return "\n".join(out) + "\n"


def rendezvous(rank: int, nnodes: int, addr: str, port: int, timeout: float = 120.0,
               host: str = "") -> list[str]:
    """Rank 0 accepts nnodes-1 connections on addr:port and returns every rank's hostname in
    rank order; the others connect (with retries) and send theirs."""
    deadline = time.monotonic() + timeout
    if rank == 0:
        hosts = {0: host or socket.gethostname()}
        with socket.create_server((addr, port), reuse_port=False) as srv:
            srv.settimeout(timeout)
            peers = []
            for _ in range(nnodes - 1):
                conn = srv.accept()[0]
                conn.settimeout(timeout)
                line = conn.makefile("r").readline().split()
                if len(line) == 2 and line[0].isdigit():
                    hosts[int(line[0])] = line[1]
                peers.append(conn)
            for p in peers:
                p.sendall(b"go\n")
                p.close()
        return [hosts.get(r, f"rank{r}") for r in range(nnodes)]
    while True:
        try:
            with socket.create_connection((addr, port), timeout=5) as c:
                c.sendall(f"{rank} {host or socket.gethostname()}\n".encode())
                c.recv(3)
                return []
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
    hosts = rendezvous(ns.node_rank, ns.nnodes, ns.master_addr, ns.master_port)
    env = dict(os.environ)
    if env.get("NCCL_DEBUG", "").upper() == "INFO":
        for line in nccl_lines(env, socket.gethostname(), os.getpid(), ns.node_rank, ns.nnodes):
            print(line)
    if ns.node_rank == 0:
        print(tables(profile_of(env), hosts), end="")
    return 0
