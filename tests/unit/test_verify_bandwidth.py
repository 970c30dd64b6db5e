"""`verify-ib --bandwidth` orchestration with fake connections.

The fakes stand in for what the testbed cannot run: GPUs, RDMA devices and the cluster
image. Their output is real: the ib_write_bw and nccl-tests captures from DGX Sparks, the
NCCL logs from a Spark pair and from the 2xH200 probe runs (tests/fixtures). Where a Spark
capture is missing (an all_reduce table), the double edits a real one and says so.
"""

from __future__ import annotations

import io
import re
import shlex
import zipfile
from pathlib import Path

import pytest

from dgxcluster.core import ship
from dgxcluster.core.buildcontext import scan
from dgxcluster.core.session import Session
from dgxcluster.facts import nccl_tests
from dgxcluster.inventory import parse_inventory
from dgxcluster.nodeside.nccl_probe import HEADER, bus_factor, fmt_row, parse_size, sizes
from dgxcluster.remote.group import Cluster
from dgxcluster.secrets import Redactor
from dgxcluster.verify.bandwidth import PROBE_IN_CONTAINER, judge_nccl, probe_max_bytes, run_bandwidth
from dgxcluster.verify.results import CheckResult, Level
from tests.fakes import FakeConnection, Reply

FIX = Path(__file__).resolve().parents[1] / "fixtures"
INV = f"""\
cluster: spark
nodes:
  - {{name: spark1, host: s1, fabric_ip: 192.168.100.10, rail_ips: [192.168.100.10, 192.168.101.10]}}
  - {{name: spark2, host: s2, fabric_ip: 192.168.100.11, rail_ips: [192.168.100.11, 192.168.101.11]}}
image: {{name: dgxcluster/vllm-gb10, context: {FIX / "image-context"}}}
"""


def body(rel: str) -> str:
    return (FIX / rel).read_text().partition("\n")[2]


HEALTHY = body("real/nccl-tests_all_gather_perf_2x_dgx_spark_healthy_21.4GBs_jp_notebook.txt")
DEGRADED = body("real/nccl-tests_all_gather_perf_2x_dgx_spark_DEGRADED_2.8GBs_jp_notebook.txt")
IB_LOG = body("real/nccl_debug_NET_IB_init_dgx_spark_2node.log")
SOCKET_LOG = body("real/nccl_debug_NET_Socket_fallback_ABRIDGED_dgx_spark.txt")
IB_WRITE = body("real/ib_write_bw_client1_rocep1s0f0_dgx_spark_playbook.txt")


def as_all_reduce(table: str) -> str:
    """Test double: the all_gather capture relabelled all_reduce (no real Spark all_reduce
    capture exists here; for 2 ranks busbw is comparable)."""
    return table.replace("all_gather_perf", "all_reduce_perf").replace("    none ", "     sum ")


#: What the image's NCCL-library probe prints when torch uses the system libnccl (the probe's
#: own format; library paths as in the NGC image layout reported in vllm#41725).
SYSTEM_NCCL = ('dgxcluster-nccl-libs {"loaded": [{"path": "/usr/lib/aarch64-linux-gnu/libnccl.so.2", '
               '"real": "/usr/lib/aarch64-linux-gnu/libnccl.so.2.28.9", "version": "2.28.9+cuda13.0", '
               '"sha256": "' + "c0" * 32 + '"}], '
               '"system": [{"path": "/usr/lib/aarch64-linux-gnu/libnccl.so.2", '
               '"real": "/usr/lib/aarch64-linux-gnu/libnccl.so.2.28.9", "version": "2.28.9+cuda13.0", '
               '"sha256": "' + "c0" * 32 + '"}], "torch": "2.28.9", "wheel": []}\n')


def spark_pair(table: str, log: str, *, image: bool = True,
               tools: str = "have ib_write_bw\nhave torch\n" + SYSTEM_NCCL,
               inv_text: str = INV) -> tuple[Session, dict[str, FakeConnection]]:
    fakes = {}
    for name in ("spark1", "spark2"):
        f = FakeConnection(name)
        f.on(r"^docker image inspect", Reply(stdout="sha256:" + "ab" * 32 + "\n") if image else
             Reply(exit_code=1, stderr=f"Error: No such image: {expected_ref()}\n"))
        f.on(r"command -v", Reply(stdout=tools))
        f.on(r"docker rm -f", Reply())
        f.on(r"HOME", Reply(stdout="/home/nvidia"))
        f.on(r"\[ -f ", Reply(exit_code=1))  # the node-side bundle is not there yet
        f.on(r" ib_write_bw ", Reply(stdout=IB_WRITE))
        head = name == "spark1"
        f.on(r"torch\.distributed\.run", Reply(
            stdout=(table + as_all_reduce(table) if head else "") + log))
        fakes[name] = f
    inv = parse_inventory(inv_text, environ={})
    cluster = Cluster(inv, factory=lambda spec: fakes[spec.name])
    return Session(inventory=inv, cluster=cluster, redactor=Redactor()), fakes


def by_check(results: list[CheckResult]) -> dict[tuple[str, str], CheckResult]:
    return {(r.node, r.check): r for r in results}


def test_healthy_pair_passes_with_evidence() -> None:
    session, _fakes = spark_pair(HEALTHY, IB_LOG)
    res = by_check(run_bandwidth(session, ["spark1", "spark2"], 21.875))
    ib0 = res[("spark1->spark2", "ib-write-bw rocep1s0f1")]
    assert ib0.status == Level.PASS and ib0.detail.startswith(
        "92.57 Gb/s over rocep1s0f1 to spark2 rocep1s0f1 192.168.100.11 (floor 90")
    assert res[("spark1->spark2", "ib-write-bw roceP2p1s0f1")].status == Level.PASS
    ag = res[("cluster", "nccl-all_gather")]
    assert ag.status == Level.PASS
    assert "busbw 22.46 GB/s at 4 GiB, avg 21.4033 (floor 21.875; algbw 44.92 over 2 ranks" in ag.detail
    assert "over rocep1s0f1, roceP2p1s0f1" in ag.detail and "GPU Direct RDMA disabled" in ag.detail
    assert res[("cluster", "nccl-all_reduce")].status == Level.PASS
    lib = res[("cluster", "nccl-library")]
    assert lib.status == Level.PASS and "system NCCL 2.28.9+cuda13.0" in lib.detail


def test_wheel_nccl_differing_from_the_system_one_warns() -> None:
    wheel = "/usr/local/lib/python3.12/dist-packages/nvidia/nccl/lib/libnccl.so.2"
    tools = "have torch\n" + SYSTEM_NCCL.replace(
        '"loaded": [{"path": "/usr/lib/aarch64-linux-gnu/libnccl.so.2", "real": '
        '"/usr/lib/aarch64-linux-gnu/libnccl.so.2.28.9"',
        f'"loaded": [{{"path": "{wheel}", "real": "{wheel}"', 1).replace("c0" * 32, "a7" * 32, 1)
    session, fakes = spark_pair(HEALTHY, IB_LOG, tools=tools)
    res = by_check(run_bandwidth(session, ["spark1", "spark2"], 21.875))
    lib = res[("cluster", "nccl-library")]
    assert lib.status == Level.WARN and wheel in lib.detail and "41725" in lib.detail
    assert res[("cluster", "nccl-all_gather")].status == Level.PASS  # bandwidth judged apart
    tools_run = next(c for c in fakes["spark1"].calls if "command -v" in " ".join(c))
    assert tools_run[-2:] == ["sh", "/opt/dgxcluster/nodeside.pyz"]  # the bundle's probe, as $1
    assert "nccl_libs" in tools_run[-3]


def test_ngc_ibext_log_passes_as_rdma_and_one_rail_warns() -> None:
    ibext = body("real/nccl_debug_IBext_v11_both_twins_ngc_vllm_26.03_dgx_spark_oshlabs.txt")
    res = by_check(judge_nccl(HEALTHY + as_all_reduce(HEALTHY), ibext, {}, 21.875, 2))
    ag = res[("cluster", "nccl-all_gather")]
    assert ag.status == Level.PASS
    assert "RDMA through NCCL's external IB plugin IBext_v11" in ag.detail
    one = "\n".join(ln for ln in ibext.splitlines() if not ln.endswith("/1")).replace(
        " [1]roceP2p1s0f0:1/RoCE", "")
    warn = by_check(judge_nccl(HEALTHY + as_all_reduce(HEALTHY), one, {}, 21.875, 2))
    w = warn[("cluster", "nccl-all_gather")]
    assert w.status == Level.WARN and w.detail.startswith("NCCL used only rocep1s0f0 of 2 rails")
    chans = "\n".join(ln for ln in ibext.splitlines() if not ln.endswith("/1"))  # both opened
    c = by_check(judge_nccl(HEALTHY + as_all_reduce(HEALTHY), chans, {}, 21.875, 2))
    assert c[("cluster", "nccl-all_gather")].detail.startswith(
        "NCCL used only rocep1s0f0 (channel lines) of 2 rails")


def test_ring_summary_reports_gdr_off() -> None:
    gdr = body("real/nccl_debug_ring_GDR0_dgx_spark_pair_nccl2.30.7.txt")
    res = by_check(judge_nccl(HEALTHY + as_all_reduce(HEALTHY), gdr, {}, 21.875, 2))
    assert "GPU Direct RDMA off ('use ring PXN ... GDR 0', expected on GB10)" in res[
        ("cluster", "nccl-all_gather")].detail


BUNDLE = f"/home/nvidia/.local/state/dgxcluster/spark/bin/nodeside-{ship.digest()}.pyz"


def expected_ref() -> str:
    """The image `start` runs: the fixture context's content tag, with the build args build
    passes (RAY_VERSION from ray.version)."""
    build_args = parse_inventory(INV, environ={}).build_args
    return f"dgxcluster/vllm-gb10:{scan(FIX / 'image-context', 'Dockerfile', build_args).content_tag}"


def test_probe_launch_lines() -> None:
    session, fakes = spark_pair(HEALTHY, IB_LOG)
    ref = expected_ref()
    run_bandwidth(session, ["spark1", "spark2"], 21.875)
    launches = {n: next(c for c in f.calls if "torch.distributed.run" in c) for n, f in fakes.items()}
    for rank, (_name, argv) in enumerate(launches.items()):
        line = shlex.join(argv)
        assert f"--node_rank {rank}" in line and "--nnodes 2" in line
        assert "--master_addr 192.168.100.10" in line
        assert "-e NCCL_DEBUG=INFO" in line and "-e NCCL_IB_HCA=rocep1s0f1,roceP2p1s0f1" in line
        assert f"-e VLLM_HOST_IP=192.168.100.1{rank}" in line
        assert "--device /dev/infiniband" in line and "--ulimit memlock=-1" in line
        assert "--cap-add IPC_LOCK" in line and "--network host" in line
        assert f"-v {BUNDLE}:{PROBE_IN_CONTAINER}:ro" in line
        assert f"{ref} -m torch.distributed.run " in line and ":current" not in line
        assert f" {PROBE_IN_CONTAINER} nccl_probe -b 64M -e 1G" in line
    with zipfile.ZipFile(io.BytesIO(fakes["spark2"].files[BUNDLE])) as zf:
        assert b"def main(" in zf.read("nodeside/nccl_probe.py")
    server = shlex.join(next(c for c in fakes["spark2"].calls if "ib_write_bw" in c))
    client = shlex.join(next(c for c in fakes["spark1"].calls if "ib_write_bw" in c))
    assert server.endswith(f"--entrypoint ib_write_bw {ref} -d rocep1s0f1 "
                           "-p 18515 -F --report_gbits -D 5 -x 3")
    assert re.search(r"ib_write_bw -d rocep1s0f1 -p 18515 .* -x 3 192\.168\.100\.11$", client)
    assert any("docker rm -f" in shlex.join(c) for c in fakes["spark1"].calls)


def test_socket_fallback_fails_even_above_floor() -> None:
    session, _ = spark_pair(HEALTHY, SOCKET_LOG)
    res = by_check(run_bandwidth(session, ["spark1", "spark2"], 21.875))
    ag = res[("cluster", "nccl-all_gather")]
    assert ag.status == Level.FAIL and ag.detail.startswith("NCCL used TCP sockets")
    assert "/dev/infiniband" in ag.fix


def test_degraded_below_floor_fails() -> None:
    session, _ = spark_pair(DEGRADED, IB_LOG)
    res = by_check(run_bandwidth(session, ["spark1", "spark2"], 21.875))
    ag = res[("cluster", "nccl-all_gather")]
    assert ag.status == Level.FAIL and "busbw 2.83 GB/s" in ag.detail and "MTU" in ag.fix


def test_min_busbw_option_is_the_floor() -> None:
    session, _ = spark_pair(DEGRADED, IB_LOG)
    res = by_check(run_bandwidth(session, ["spark1", "spark2"], 2.5))
    assert res[("cluster", "nccl-all_gather")].status == Level.PASS


def test_missing_image_stops_before_measuring() -> None:
    session, fakes = spark_pair(HEALTHY, IB_LOG, image=False)
    (r,) = run_bandwidth(session, ["spark1", "spark2"], 21.875)
    assert (r.check, r.status) == ("bandwidth", Level.FAIL)
    assert f"{expected_ref()} not found" in r.detail and "dgxcluster build" in r.fix
    assert not any("docker run" in shlex.join(c) for f in fakes.values() for c in f.calls)


def test_image_without_torch_or_perftest() -> None:
    session, _ = spark_pair(HEALTHY, IB_LOG, tools="")
    res = by_check(run_bandwidth(session, ["spark1", "spark2"], 21.875))
    assert res[("cluster", "ib-write-bw")].status == Level.WARN
    assert res[("cluster", "nccl-bandwidth")].status == Level.FAIL


def test_judge_on_h200_captures() -> None:
    nvlink = body("captured/nccl_probe_h200x2_nvlink.txt")
    res = by_check(judge_nccl(nvlink, nvlink, {}, 21.875, 2))
    ar = res[("cluster", "nccl-all_reduce")]
    assert ar.status == Level.PASS and "busbw 330.16 GB/s at 1 GiB" in ar.detail
    assert "GPU peer-to-peer inside one node" in ar.detail
    sockets = body("captured/nccl_probe_h200x2_sockets.txt")
    res = by_check(judge_nccl(sockets, sockets, {}, 1.0, 2))
    ag = res[("cluster", "nccl-all_gather")]
    assert ag.status == Level.FAIL and "NCCL used TCP sockets: busbw 3.70 GB/s" in ag.detail


def test_judge_without_table_reports_output_tail() -> None:
    (r,) = judge_nccl("", "torch.distributed.DistNetworkError: connection refused\n",
                      {"spark2": "spark2: `docker run ...` gave no result within 900s"}, 21.875, 2)
    assert r.status == Level.FAIL and "could not parse nccl-tests output" in r.detail
    assert "connection refused" in r.detail and "spark2" in r.detail


# -- the probe's own arithmetic and table (torch not needed) ------------------------------------

def test_probe_busbw_factors_match_nccl_tests() -> None:
    assert bus_factor("all_reduce", 2) == 1.0 and bus_factor("all_gather", 2) == 0.5
    assert bus_factor("all_reduce", 8) == pytest.approx(1.75)
    assert bus_factor("all_gather", 8) == pytest.approx(0.875)
    assert sizes(parse_size("64M"), parse_size("1G"), 4) == [1 << 26, 1 << 28, 1 << 30]


def test_probe_table_is_read_by_the_nccl_tests_parser() -> None:
    text = "# Collective test starting: all_gather_perf\n" + HEADER + "\n" + fmt_row(
        1 << 30, 1 << 27, "none", (48000.0, 22.37, 11.18, 0), (47000.0, 22.85, 11.42, 0)) + \
        "\n# Avg bus bandwidth    : 11.3 \n"
    (t,) = nccl_tests.parse(text)
    assert t.busbw_at_largest == 11.42 and t.avg_busbw == 11.3


def test_unreadable_build_context_says_which_image_is_unknown() -> None:
    session, fakes = spark_pair(HEALTHY, IB_LOG,
                                inv_text=INV.replace("image-context", "no-such-context"))
    (r,) = run_bandwidth(session, ["spark1", "spark2"], 21.875)
    assert (r.check, r.status) == ("bandwidth", Level.FAIL)
    assert r.detail.startswith("cannot tell which image to measure in") and "image.context" in r.detail
    assert not any(f.calls for f in fakes.values())  # nothing asked of any node


GIB = 1 << 30


def test_the_probe_is_sized_to_a_quarter_of_the_memory_available() -> None:
    assert probe_max_bytes(None) == GIB  # unknown: nccl-tests' usual range
    assert probe_max_bytes(100 * GIB) == GIB
    assert probe_max_bytes(16 * GIB) == GIB  # 2 x 1 GiB + 2 GiB = a quarter of 16
    assert probe_max_bytes(12 * GIB) == 256 << 20
    assert probe_max_bytes(9 * GIB) == 64 << 20
    assert probe_max_bytes(8 * GIB) is None


def _available(fakes: dict[str, FakeConnection], node: str, gib: int) -> None:
    fakes[node].on("/proc/meminfo", Reply(stdout=f"MemTotal: {120 * GIB // 1024} kB\n"
                                          f"MemAvailable: {gib * GIB // 1024} kB\n"))


def test_the_node_with_least_memory_available_sizes_the_probe_for_all() -> None:
    session, fakes = spark_pair(HEALTHY, IB_LOG)
    _available(fakes, "spark1", 90)
    _available(fakes, "spark2", 12)
    run_bandwidth(session, ["spark1", "spark2"], 21.875)
    for f in fakes.values():
        line = shlex.join(next(c for c in f.calls if "torch.distributed.run" in c))
        assert " nccl_probe -b 64M -e 256M -f 4 -w 3 -n 10" in line


def test_too_little_memory_available_measures_nothing_and_says_why() -> None:
    session, fakes = spark_pair(HEALTHY, IB_LOG)
    _available(fakes, "spark1", 90)
    _available(fakes, "spark2", 6)
    res = by_check(run_bandwidth(session, ["spark1", "spark2"], 21.875))
    r = res[("cluster", "nccl-bandwidth")]
    assert r.status == Level.FAIL and "6.0 GiB available on spark2" in r.detail
    assert not any("torch.distributed.run" in c for f in fakes.values() for c in f.calls)
