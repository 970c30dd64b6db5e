"""`verify-ib --bandwidth` end to end on a 2-node docker testbed, inside the testbed image.

What is real: sshd, the Docker daemons, the cluster image made by `dgxcluster build`, the
measurement containers with the inventory's options and environment, and the ranks meeting
over the fabric addresses. What is a double (the testbed has no GPU, NCCL or RDMA): the
simulated hardware tools (`simhw`) and the image's NCCL stand-in, which replays real DGX Spark
NCCL captures: the NGC-style profile (external IB plugin IBext_v11 over the twins
NCCL_IB_HCA names) or the socket fallback (images/testbed/standin/nccl_standin.py).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import Testbed, run_cli

pytestmark = [pytest.mark.e2e, pytest.mark.docker]


@pytest.fixture(scope="module")
def tb(testbed_docker: Testbed) -> Iterator[Testbed]:
    testbed_docker.ensure_image()
    for node in testbed_docker.nodes:
        testbed_docker.tb("simhw", node, "healthy")
    yield testbed_docker
    for node in testbed_docker.nodes:
        testbed_docker.tb("simhw", node, "off", check=False)


def bandwidth(tb: Testbed, tmp_path: Path, env: dict[str, str]) -> tuple[int, dict[tuple[str, str], Any]]:
    data = tb.portable_doc()
    data["container"]["env"] = env
    inv = tmp_path / "inv.yaml"
    inv.write_text(yaml.safe_dump(data))
    p = run_cli("-i", str(inv), "verify-ib", "--bandwidth", "--json", timeout=600)
    assert "Traceback" not in p.stderr, p.stderr
    return p.returncode, {(r["node"], r["check"]): r for r in json.loads(p.stdout)}


def test_ngc_nccl_profile_reports_rdma_over_both_rails(tb: Testbed, tmp_path: Path) -> None:
    rc, rows = bandwidth(tb, tmp_path, {"DGXCLUSTER_STANDIN_NCCL": "ngc-ibext"})
    for op in ("all_gather", "all_reduce"):
        r = rows[("cluster", f"nccl-{op}")]
        assert r["status"] == "PASS", r
        assert "RDMA through NCCL's external IB plugin IBext_v11" in r["detail"]
        assert "over rocep1s0f1, roceP2p1s0f1" in r["detail"]
        assert "busbw 22.46 GB/s at 4 GiB" in r["detail"]
    assert rows[("cluster", "ib-write-bw")]["status"] == "WARN"  # no perftest in the testbed image
    assert ("cluster", "nccl-library") not in rows  # the torch stand-in has no CUDA build to judge
    assert rc == 1  # container-rdma fails on the testbed (no /dev/infiniband), as documented


def test_one_twin_in_nccl_ib_hca_warns_one_rail(tb: Testbed, tmp_path: Path) -> None:
    _, rows = bandwidth(tb, tmp_path, {"DGXCLUSTER_STANDIN_NCCL": "ngc-ibext",
                                       "NCCL_IB_HCA": "rocep1s0f1"})
    r = rows[("cluster", "nccl-all_gather")]
    assert r["status"] == "WARN" and r["detail"].startswith("NCCL used only rocep1s0f1 of 2 rails")


def test_without_rdma_nccl_falls_back_to_sockets_and_fails(tb: Testbed, tmp_path: Path) -> None:
    rc, rows = bandwidth(tb, tmp_path, {})
    r = rows[("cluster", "nccl-all_gather")]
    assert rc == 1 and r["status"] == "FAIL" and r["detail"].startswith("NCCL used TCP sockets")
