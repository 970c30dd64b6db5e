"""The testbed image's NCCL stand-in: what it prints (edits of real DGX Spark captures) reads
as promised through verify-ib's own judge, and its ranks really meet over TCP."""

from __future__ import annotations

import importlib.util
import socket
import sys
import threading
from pathlib import Path
from types import ModuleType

import pytest

from dgxcluster.facts import nccl_log
from dgxcluster.verify.bandwidth import judge_nccl
from dgxcluster.verify.results import Level
from tests.scripts_path import SCRIPTS

STANDIN = Path(__file__).resolve().parents[2] / "images" / "testbed" / "standin"
REAL = Path(__file__).resolve().parents[1] / "fixtures" / "real"
TWINS = "rocep1s0f1,roceP2p1s0f1"


@pytest.fixture
def standin(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    spec = importlib.util.spec_from_file_location("nccl_standin", STANDIN / "nccl_standin.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    monkeypatch.setattr(mod, "CAPTURES", REAL)  # fetch-wheels copies these into the image
    return mod


def output(mod: ModuleType, env: dict[str, str], host: str = "node1") -> str:
    lines = mod.nccl_lines({"NCCL_DEBUG": "INFO", **env}, host, 4242)
    return "\n".join(lines) + "\n"


def test_ngc_profile_is_rdma_over_both_twins(standin: ModuleType) -> None:
    env = {"DGXCLUSTER_STANDIN_NCCL": "ngc-ibext", "NCCL_IB_HCA": TWINS}
    text = output(standin, env)
    assert text.startswith("node1:4242:4242 [0] NCCL INFO NET/IB : Using [0]rocep1s0f1:1/RoCE "
                           "[1]roceP2p1s0f1:1/RoCE [RO]\n")
    log = nccl_log.parse(text)
    assert log.transport.rdma and log.transport.net == "IBext_v11" and log.net_devices == [0, 1]
    head = standin.tables("ngc-ibext") + text
    res = {r.check: r for r in judge_nccl(head, head + output(standin, env, "node2"), {}, 21.875, 2)}
    ag = res["nccl-all_gather"]
    assert ag.status == Level.PASS, ag
    assert "RDMA through NCCL's external IB plugin IBext_v11" in ag.detail
    assert "over rocep1s0f1, roceP2p1s0f1" in ag.detail


def test_one_twin_in_nccl_ib_hca_gives_one_rail(standin: ModuleType) -> None:
    env = {"DGXCLUSTER_STANDIN_NCCL": "ngc-ibext", "NCCL_IB_HCA": "=rocep1s0f1:1"}
    text = output(standin, env)
    assert nccl_log.parse(text).net_devices == [0]
    head = standin.tables("ngc-ibext") + text
    res = {r.check: r for r in judge_nccl(head, head, {}, 21.875, 2)}
    assert res["nccl-all_gather"].status == Level.WARN
    assert "NCCL used only rocep1s0f1 of 2 rails" in res["nccl-all_gather"].detail


def test_socket_is_the_default_and_nccl_ib_disable_wins(standin: ModuleType) -> None:
    text = output(standin, {"NCCL_SOCKET_IFNAME": "enp1s0f1np1"})
    log = nccl_log.parse(text)
    assert log.transport.sockets and log.socket_ifaces == ["enp1s0f1np1"]
    off = output(standin, {"DGXCLUSTER_STANDIN_NCCL": "ngc-ibext", "NCCL_IB_DISABLE": "1"})
    assert nccl_log.parse(off).transport.sockets
    head = standin.tables("socket") + text
    res = {r.check: r for r in judge_nccl(head, head, {}, 21.875, 2)}
    assert res["nccl-all_gather"].status == Level.FAIL
    assert res["nccl-all_gather"].detail.startswith("NCCL used TCP sockets")
    with pytest.raises(SystemExit, match="unknown DGXCLUSTER_STANDIN_NCCL"):
        output(standin, {"DGXCLUSTER_STANDIN_NCCL": "nvlink"})


def test_ranks_meet_over_tcp(standin: ModuleType) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    errors: list[BaseException] = []

    def run(rank: int) -> None:
        try:
            standin.rendezvous(rank, 3, "127.0.0.1", port, timeout=30)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(r,)) for r in (1, 2, 0)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == [] and not any(t.is_alive() for t in threads)
    with pytest.raises(SystemExit, match=r"could not reach 127\.0\.0\.1"):
        standin.rendezvous(1, 2, "127.0.0.1", port, timeout=1)


def test_simhw_lists_the_stand_ins_profiles(standin: ModuleType) -> None:
    sys.path.insert(0, str(SCRIPTS))
    from testbed_lib import simhw

    assert set(simhw.NCCL_PROFILES) == set(standin.PROFILES)
    for files in standin.PROFILES.values():
        for f in files:
            assert (REAL / f).exists(), f


def test_ring_settings_give_ncclS_internal_ib_over_every_twin(standin: ModuleType) -> None:
    """NCCL_NET_PLUGIN=none (a ring or mesh) loads no external plugin: NCCL's own IB transport,
    over the four twins NCCL_IB_HCA names, bootstrapping on the management interface."""
    env = {"DGXCLUSTER_STANDIN_NCCL": "ngc-ibext", "NCCL_NET_PLUGIN": "none",
           "NCCL_IB_HCA": "rocep1s0f1,roceP2p1s0f1,rocep1s0f0,roceP2p1s0f0",
           "NCCL_SOCKET_IFNAME": "enP7s7", "VLLM_HOST_IP": "10.210.2.12"}
    text = "\n".join(standin.nccl_lines({"NCCL_DEBUG": "INFO", **env}, "node2", 7, 1, 3)) + "\n"
    log = nccl_log.parse(text)
    assert log.transport.rdma and log.transport.net == "IB"
    assert log.ib_devices == ["rocep1s0f1", "roceP2p1s0f1", "rocep1s0f0", "roceP2p1s0f0"]
    assert "OOB enP7s7:10.210.2.12<0>" in text and "rank 1 nranks 3" in text
    assert "NCCL_SOCKET_IFNAME set to enP7s7" in text
    head = standin.tables("ngc-ibext", ["node1", "node2", "node3"]) + text
    res = {r.check: r for r in judge_nccl(head, head, {}, 10.0, 4, nranks=3)}
    assert res["nccl-all_reduce"].status == Level.PASS, res["nccl-all_reduce"]


def test_rank_zero_learns_every_ranks_host(standin: ModuleType) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    hosts: list[list[str]] = []
    threads = [threading.Thread(target=lambda r=r: hosts.append(
        standin.rendezvous(r, 3, "127.0.0.1", port, timeout=30, host=f"node{r + 1}")))
        for r in (1, 2, 0)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert ["node1", "node2", "node3"] in hosts
