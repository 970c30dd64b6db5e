"""The testbed's simulated-hardware profiles replay real captures that our parsers read as
the profile promises (the tools themselves are exercised end to end in tests/e2e)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from dgxcluster.facts import ethtool, ibdev2netdev, ibv_devinfo, nvidia_smi

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
from testbed_lib import simhw

EXPECTED = {
    "healthy": ({"rocep1s0f1", "roceP2p1s0f1"}, 200000),
    "100g": ({"rocep1s0f1", "roceP2p1s0f1"}, 100000),
    "port1-down": (set(), None),
    "port0-cabled": ({"rocep1s0f0", "roceP2p1s0f0"}, 200000),
    "all-up": ({"rocep1s0f0", "rocep1s0f1", "roceP2p1s0f0", "roceP2p1s0f1"}, 200000),
}


#: `auto` writes tools that read the node's links when they run (not a fixed replay): the
#: e2e topology tests exercise it on a live testbed, with cables cut.
@pytest.mark.parametrize("name", sorted(set(simhw.PROFILES) - {simhw.AUTO}))
def test_profile_outputs_parse_as_promised(name: str) -> None:
    files = simhw.PROFILES[name].build()
    active, speed = EXPECTED[name]
    info = ibv_devinfo.parse(files["ibv_devinfo"])
    assert {d.name for d in info.devices if d.active} == active
    links = ibdev2netdev.parse(files["ibdev2netdev"])
    assert {ln.device for ln in links if ln.state == "Up"} == active
    rail = ethtool.parse(files.get("ethtool/enp1s0f1np1", ""))
    expect_rail = speed if "rocep1s0f1" in active else None
    assert rail.speed_mbps == expect_rail
    assert nvidia_smi.parse(files["nvidia-smi"]).gpus[0].name == "NVIDIA GB10"
    assert "$ " not in files["ibdev2netdev"]  # shell prompts of the capture are dropped


def test_healthy_devinfo_is_the_capture_verbatim() -> None:
    real = (simhw.CAPTURES / simhw.F_DEVINFO_PORT1).read_text().partition("\n")[2]
    assert simhw.PROFILES["healthy"].build()["ibv_devinfo"].strip() == real.strip()


def test_tools_announce_simulated_hardware_on_stderr() -> None:
    for tool in simhw.TOOLS:
        script = simhw._script(tool, "healthy", "tests/fixtures/real/x.txt")
        assert script.startswith("#!/bin/sh\n")
        assert "echo 'dgxtb: simulated hardware (profile healthy)" in script and ">&2" in script
