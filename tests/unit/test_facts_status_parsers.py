"""`ray status` and `nvidia-smi` parsers on real captures (tests/fixtures/real, first line =
source) and on captures from the testbed's real Ray 2.60 (tests/fixtures/captured)."""

from __future__ import annotations

from pathlib import Path

import pytest

from dgxcluster.facts import ParseError, nvidia_smi, ray_status

FIX = Path(__file__).resolve().parents[1] / "fixtures"


def body(path: Path) -> str:
    """A fixture without its first line (the source note)."""
    return path.read_text().split("\n", 1)[1]


def test_ray_status_two_sparks() -> None:
    rs = ray_status.parse(body(FIX / "real" / "ray_status_2x_dgx_spark_head_container_oshlabs.txt"))
    assert rs.nodes_alive == 2
    assert rs.pending == () and rs.failures == ()
    assert rs.gpus == ray_status.Usage(0.0, 2.0, "", None)
    assert rs.resources["CPU"].total == 40.0
    assert rs.resources["memory"] == ray_status.Usage(0.0, 221.76, "GiB", None)


def test_ray_dashboard_answer_from_ray_2_60() -> None:
    rs = ray_status.parse_dashboard(
        body(FIX / "captured" / "ray_cluster_status_format1_testbed_1node.txt"))
    assert rs.nodes_alive == 1
    assert rs.gpus == ray_status.Usage(0.0, 1.0, "", None)


def test_placement_group_reservation_is_kept() -> None:
    rs = ray_status.parse_dashboard(
        body(FIX / "captured" / "ray_cluster_status_format1_testbed_placement_group.txt"))
    assert rs.gpus == ray_status.Usage(0.0, 1.0, "", 1.0)
    assert rs.resources["CPU"].reserved == 1.0


def test_ray_status_newer_layout_with_idle_pending_and_failures() -> None:
    text = """======== Autoscaler status: 2026-01-01 00:00:00 ========
Node status
---------------------------------------------------------------
Active:
 1 node_aaaa
Idle:
 2 node_bbbb
Pending:
 10.0.0.3: worker, setting up
Recent failures:
 worker: NodeTerminated (ip: 10.0.0.4)

Resources
---------------------------------------------------------------
Total Usage:
 2.0/3.0 GPU (2.0 used of 2.0 reserved in placement groups)
 1.0/60.0 CPU
Total Constraints:
 (no request_resources() constraints)
Total Demands:
 (no resource demands)
"""
    rs = ray_status.parse(text)
    assert rs.nodes_alive == 3
    assert rs.pending == ("10.0.0.3: worker, setting up",)
    assert rs.failures == ("worker: NodeTerminated (ip: 10.0.0.4)",)
    assert rs.gpus == ray_status.Usage(2.0, 3.0, "", 2.0)


def test_older_ray_usage_section() -> None:
    rs = ray_status.parse("Node status\n----\nHealthy:\n 1 node_x\n\nResources\n----\nUsage:\n"
                          " 0.0/1.0 GPU\n")
    assert rs.nodes_alive == 1
    assert rs.gpus == ray_status.Usage(0.0, 1.0)


@pytest.mark.parametrize("text", ["", "ConnectionError: could not connect to GCS", "{}"])
def test_ray_garbage_is_a_parse_error(text: str) -> None:
    with pytest.raises(ParseError, match="could not parse ray status"):
        ray_status.parse(text)


@pytest.mark.parametrize("text", ["<html>502</html>", '{"data": {}}',
                                  '{"result": true, "data": {"clusterStatus": "No cluster status."}}'])
def test_dashboard_garbage_is_a_parse_error(text: str) -> None:
    with pytest.raises(ParseError, match="could not parse GET /api/cluster_status"):
        ray_status.parse_dashboard(text)


def test_nvidia_smi_gb10() -> None:
    smi = nvidia_smi.parse((FIX / "real" / "nvidia-smi_gb10_with_processes_obrienlabs.txt").read_text())
    assert (smi.driver, smi.cuda) == ("580.95.05", "13.0")
    (gpu,) = smi.gpus
    assert gpu == nvidia_smi.Gpu(0, "NVIDIA GB10", 45, "11W / N/A", "Not Supported", 10)
    assert [p.pid for p in smi.processes] == [4174, 4399, 4761]
    assert smi.processes[2].name == ".../7182/usr/lib/firefox/firefox"
    assert smi.processes[2].memory == "273MiB"


def test_nvidia_smi_datacenter_gpu_with_memory_and_no_processes() -> None:
    text = """+-----------------------------------------------------------------------------------------+
| NVIDIA-SMI 570.86.15              Driver Version: 570.86.15      CUDA Version: 12.8     |
|-----------------------------------------+------------------------+----------------------+
| GPU  Name                 Persistence-M | Bus-Id          Disp.A | Volatile Uncorr. ECC |
| Fan  Temp   Perf          Pwr:Usage/Cap |           Memory-Usage | GPU-Util  Compute M. |
|=========================================+========================+======================|
|   0  NVIDIA H200                    On  |   00000000:18:00.0 Off |                    0 |
| N/A   31C    P0             76W /  700W |       1MiB / 143771MiB |      0%      Default |
+-----------------------------------------+------------------------+----------------------+
|   1  NVIDIA H200                    On  |   00000000:2A:00.0 Off |                    0 |
| N/A   29C    P0             75W /  700W |       1MiB / 143771MiB |     97%      Default |
+-----------------------------------------+------------------------+----------------------+

+-----------------------------------------------------------------------------------------+
| Processes:                                                                              |
|  GPU   GI   CI              PID   Type   Process name                        GPU Memory |
|=========================================================================================|
|  No running processes found                                                             |
+-----------------------------------------------------------------------------------------+
"""
    smi = nvidia_smi.parse(text)
    assert [(g.index, g.utilization_pct, g.memory) for g in smi.gpus] == [
        (0, 0, "1MiB / 143771MiB"), (1, 97, "1MiB / 143771MiB")]
    assert smi.gpus[0].power == "76W / 700W"
    assert smi.processes == ()


@pytest.mark.parametrize(("text", "why"), [
    ("NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.",
     "couldn't communicate"),
    ("sh: 1: nvidia-smi: not found", "not found"),
    ("garbage", "Driver Version"),
])
def test_nvidia_smi_failures_are_parse_errors(text: str, why: str) -> None:
    with pytest.raises(ParseError, match=why):
        nvidia_smi.parse(text)
