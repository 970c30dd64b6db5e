"""`dgxcluster verify-ib` against real sshd on a 2-node testbed.

Interfaces, addresses, MTU and pings are real (veth rails at MTU 9000). The RDMA and GPU
tools are the testbed's simulated hardware (`scripts/testbed simhw`): test doubles that
replay real DGX Spark captures, labelled "simulated hardware" by the tool and by verify-ib.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import PREFIX, Testbed, _down, _up, run_cli

pytestmark = pytest.mark.e2e

RAILS = ("enp1s0f1np1", "enP2p1s0f1np1")


@pytest.fixture(scope="module")
def fabric2() -> Iterator[Testbed]:
    """Two SSH-only nodes, both with healthy simulated hardware."""
    tb = _up(f"{PREFIX}f2", 2, docker=False)
    for node in tb.nodes:
        tb.tb("simhw", node, "healthy")
    yield tb
    for node in tb.nodes:
        tb.tb("simhw", node, "off", check=False)
    _down(tb.name)


@pytest.fixture
def fab(fabric2: Testbed) -> Iterator[Testbed]:
    """fabric2, put back to healthy after each test (simhw, MTU, sshd)."""
    yield fabric2
    for node in fabric2.nodes:
        fabric2.tb("simhw", node, "healthy")
        for rail in RAILS:
            fabric2.tb("mtu", node, rail, "9000")
        fabric2.tb("sshd", node, "start")


def inventory(tb: Testbed, tmp_path: Path, edit: Any = None) -> Path:
    """The testbed's inventory with the DGX container options (so all-pass is possible)."""
    data = yaml.safe_load(tb.inventory.read_text())
    data["ssh"]["known_hosts"] = str(tb.known_hosts)
    data["image"]["context"] = str(tb.inventory.parent / data["image"]["context"])
    data["container"]["devices"] = ["/dev/infiniband"]
    data["container"]["ulimits"] = {"memlock": "-1"}  # the testbed's own inventory leaves it out
    if edit:
        edit(data)
    out = tmp_path / "inv.yaml"
    out.write_text(yaml.safe_dump(data))
    return out


def verify(inv: Path, *args: str) -> tuple[int, list[dict[str, str]], str]:
    p = run_cli("-i", str(inv), "verify-ib", "--json", *args, timeout=120)
    assert "Traceback" not in p.stderr, p.stderr
    return p.returncode, json.loads(p.stdout), p.stderr


def row(rows: list[dict[str, str]], node: str, check: str) -> dict[str, str]:
    found = [r for r in rows if r["node"] == node and r["check"] == check]
    assert found, f"no {node}/{check} in {[(r['node'], r['check']) for r in rows]}"
    return found[0]


def not_passing(rows: list[dict[str, str]]) -> set[tuple[str, str, str]]:
    """What did not pass, the OOM guard left out: the testbed's nodes share a host that runs
    none (earlyoom, systemd-oomd), so oom-guard WARNs there (test_all_pass_... checks it)."""
    return {(r["node"], r["check"], r["status"]) for r in rows
            if r["status"] != "PASS" and r["check"] != "oom-guard"}


def test_all_pass_on_simulated_hardware(fab: Testbed, tmp_path: Path) -> None:
    inv = inventory(fab, tmp_path)
    rc, rows, err = verify(inv)
    assert rc == 0, not_passing(rows)
    assert not_passing(rows) == set()
    for node in fab.nodes:
        for r in (x for x in rows if x["node"] == node):
            assert r["detail"].startswith("simulated hardware: "), r
    assert "8972-byte don't-fragment pings answered" in row(rows, "node1", "ping")["detail"]
    assert "node1: reading RDMA devices" in err  # progress, on stderr
    table = run_cli("-i", str(inv), "verify-ib", timeout=120)
    assert table.returncode == 0
    for node in fab.nodes:
        oom = row(rows, node, "oom-guard")
        assert oom["status"] == "WARN" and "no OOM guard" in oom["detail"], oom
        assert "systemctl enable --now earlyoom" in oom["fix"]
    assert f"{len(fab.nodes)} WARN, 0 FAIL" in table.stdout
    assert "simulated hardware (testbed)" in table.stdout


def test_port_down_fails_rdma_ports_with_fix(fab: Testbed, tmp_path: Path) -> None:
    fab.tb("simhw", "node2", "port1-down")
    rc, rows, _ = verify(inventory(fab, tmp_path))
    assert rc == 1
    ports = row(rows, "node2", "rdma-ports")
    assert ports["status"] == "FAIL"
    assert "rocep1s0f1 (enp1s0f1np1) is PORT_DOWN" in ports["detail"]
    assert "QSFP cable" in ports["fix"]
    assert row(rows, "node2", "link-speed")["status"] == "FAIL"
    assert row(rows, "cluster", "cabling")["status"] == "FAIL"
    assert row(rows, "node1", "rdma-ports")["status"] == "PASS"


def test_cabled_on_other_port_and_100g(fab: Testbed, tmp_path: Path) -> None:
    fab.tb("simhw", "node1", "100g")
    fab.tb("simhw", "node2", "port0-cabled")
    rc, rows, _ = verify(inventory(fab, tmp_path))
    assert rc == 1
    speed = row(rows, "node1", "link-speed")
    assert speed["status"] == "FAIL" and "100000Mb/s, expected 200000Mb/s" in speed["detail"]
    ports = row(rows, "node2", "rdma-ports")
    assert ports["status"] == "FAIL" and "port 0" in ports["fix"]
    cabling = row(rows, "cluster", "cabling")
    assert cabling["status"] == "FAIL" and "node2" in cabling["detail"]


def test_twin_missing_from_nccl_ib_hca(fab: Testbed, tmp_path: Path) -> None:
    def one_twin(d: dict[str, Any]) -> None:
        d["fabric"]["nccl_env"] = {"NCCL_IB_HCA": "rocep1s0f1"}

    rc, rows, _ = verify(inventory(fab, tmp_path, one_twin))
    assert rc == 1
    for node in fab.nodes:
        hca = row(rows, node, "nccl-ib-hca")
        assert hca["status"] == "FAIL"
        assert "leaves out active twin(s) roceP2p1s0f1" in hca["detail"]
        assert "rocep1s0f1,roceP2p1s0f1" in hca["fix"]
    assert {x[1] for x in not_passing(rows)} == {"nccl-ib-hca"}


def test_mtu_mismatch_between_nodes(fab: Testbed, tmp_path: Path) -> None:
    fab.tb("mtu", "node2", "enp1s0f1np1", "1500")
    rc, rows, _ = verify(inventory(fab, tmp_path))
    assert rc == 1
    mtu = row(rows, "node2", "mtu")
    assert mtu["status"] == "FAIL" and "enp1s0f1np1 mtu 1500, expected at least 9000" in mtu["detail"]
    assert row(rows, "node1", "mtu")["status"] == "PASS"
    match = row(rows, "cluster", "mtu-match")
    assert match["status"] == "FAIL" and "node2 enp1s0f1np1 1500" in match["detail"]
    ping2 = row(rows, "node2", "ping")  # node2 refuses its own jumbo packet
    assert ping2["status"] == "FAIL" and "too big (mtu 1500)" in ping2["detail"]
    ping1 = row(rows, "node1", "ping")  # node2's 1500-byte interface drops node1's
    assert ping1["status"] == "FAIL" and "0/2 replies" in ping1["detail"]


def test_wrong_fabric_ip(fab: Testbed, tmp_path: Path) -> None:
    real = yaml.safe_load(fab.inventory.read_text())["nodes"][1]["fabric_ip"]
    wrong = real.rsplit(".", 1)[0] + ".99"

    def move(d: dict[str, Any]) -> None:
        d["nodes"][1]["fabric_ip"] = wrong
        d["nodes"][1]["rail_ips"][0] = wrong

    rc, rows, _ = verify(inventory(fab, tmp_path, move))
    assert rc == 1
    addr = row(rows, "node2", "addresses")
    assert addr["status"] == "FAIL" and f"fabric_ip {wrong} is not on enp1s0f1np1" in addr["detail"]
    assert real in addr["detail"]
    host = row(rows, "node2", "host-ip")
    assert host["status"] == "FAIL" and "not configured on node2" in host["detail"]
    ping = row(rows, "node1", "ping")
    assert ping["status"] == "FAIL" and wrong in ping["detail"]


def test_unreachable_node_exit_3(fab: Testbed, tmp_path: Path) -> None:
    fab.tb("sshd", "node2", "stop")
    rc, rows, _ = verify(inventory(fab, tmp_path))
    assert rc == 3
    ssh = row(rows, "node2", "ssh")
    assert ssh["status"] == "FAIL" and "unreachable" in ssh["detail"]
    assert row(rows, "node1", "rdma-ports")["status"] == "PASS"
    assert not [r for r in rows if r["node"] == "node2" and r["check"] != "ssh"]


def test_plain_node_says_no_rdma_devices(fab: Testbed, tmp_path: Path) -> None:
    fab.tb("simhw", "node1", "off")
    rc, rows, _ = verify(inventory(fab, tmp_path))
    assert rc == 1
    rdma = row(rows, "node1", "rdma-devices")
    assert rdma["status"] == "FAIL"
    assert rdma["detail"].startswith("no RDMA devices")
    assert "simhw" in rdma["fix"] and "mlx5_core" in rdma["fix"]
    assert not rdma["detail"].startswith("simulated")
    assert row(rows, "node1", "nccl-ib-hca")["status"] == "FAIL"
    assert row(rows, "node1", "interfaces")["status"] == "PASS"  # real veths


def test_bandwidth_without_image_says_so(fab: Testbed, tmp_path: Path) -> None:
    rc, rows, _ = verify(inventory(fab, tmp_path), "--bandwidth")
    assert rc == 1
    bw = row(rows, "cluster", "bandwidth")
    assert bw["status"] == "FAIL"
    assert "cannot measure inside the image" in bw["detail"]
    assert "dgxcluster/testbed:ctx-" in bw["detail"]  # the image `start` would run
    assert "dgxcluster build" in bw["fix"]


def test_bad_input_exit_2(fab: Testbed, tmp_path: Path) -> None:
    inv = inventory(fab, tmp_path)
    p = run_cli("-i", str(inv), "verify-ib", "--node", "nosuch")
    assert p.returncode == 2 and "unknown node 'nosuch'" in p.stderr
    p = run_cli("-i", str(inv), "verify-ib", "--min-busbw", "-3")
    assert p.returncode == 2 and "Traceback" not in p.stderr
