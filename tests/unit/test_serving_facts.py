"""Parsers of `ray status`, `nvidia-smi`, `docker ps` and `ss`, on real captured output."""

from __future__ import annotations

from pathlib import Path

from dgxcluster.core.docker import parse_state
from dgxcluster.facts import docker_ps, listening, nvidia_smi, ray_status
from dgxcluster.serving import raywait, vllm

REAL = Path(__file__).resolve().parents[1] / "fixtures" / "real"


def capture(name: str) -> str:
    """A capture without its first line (where it came from)."""
    (path,) = REAL.glob(name)
    return path.read_text().split("\n", 1)[1]


def test_ray_status_two_sparks_counts_nodes_and_gpus() -> None:
    st = ray_status.parse(capture("ray_status_2x_dgx_spark_head_container_oshlabs.txt"))
    assert st.error is None
    assert st.nodes == 2
    assert st.gpus == 2.0
    assert st.totals["CPU"] == 40.0
    assert st.pending == [] and st.failures == []


def test_ray_status_verbose_with_placement_group_reservation() -> None:
    st = ray_status.parse(capture("ray_status_v_testbed_2node_ray2.60_pg.txt"))
    assert st.error is None
    assert st.nodes == 2
    assert st.gpus == 2.0  # "2.0/2.0 GPU (2.0 used of 2.0 reserved in placement groups)"
    assert st.totals["CPU"] == 4.0  # per-node "Usage:" blocks are not added to the totals


def test_ray_status_before_the_autoscaler_reports() -> None:
    st = ray_status.parse(capture("ray_status_testbed_not_ready.txt"))
    assert st.error is not None and "No cluster status" in st.error
    assert st.nodes == 0


def test_ray_status_garbage_is_a_parse_error_not_an_exception() -> None:
    assert ray_status.parse("").error
    assert ray_status.parse("Node status\n-----\n").error


def test_nvidia_smi_gb10() -> None:
    smi = nvidia_smi.read(capture("nvidia-smi_gb10_with_processes_obrienlabs.txt"))
    assert smi.error is None
    assert [(g.index, g.name) for g in smi.gpus] == [(0, "NVIDIA GB10")]
    assert smi.gpus[0].bus_id == "0000000F:01:00.0"
    assert smi.driver == "580.95.05" and smi.cuda == "13.0"


def test_nvidia_smi_failure_text() -> None:
    smi = nvidia_smi.read("NVIDIA-SMI has failed because it couldn't communicate with the "
                           "NVIDIA driver.")
    # the banner word alone is not a table: no GPU, and the caller reports it
    assert smi.gpus == []
    assert nvidia_smi.read("sh: nvidia-smi: not found").error


def test_docker_ps_json_with_labels() -> None:
    ps = docker_ps.parse(capture("docker_ps_json_testbed_head_running.txt"))
    assert ps.error is None
    (c,) = ps.containers
    assert c.name == "dgxc-sdev-head" and c.running
    assert c.labels["dgxcluster.role"] == "head"
    assert c.labels["dgxcluster.node"] == "node1"
    assert len(c.labels["dgxcluster.config"]) == 16
    assert c.image.startswith("dgxcluster/testbed:ctx-")


def test_docker_ps_without_state_field_and_garbage() -> None:
    ps = docker_ps.parse('{"ID":"ab","Names":"x","Image":"i","Labels":"",'
                         '"Status":"Exited (137) 5 seconds ago"}\n')
    assert ps.containers[0].state == "exited" and not ps.containers[0].running
    assert docker_ps.parse("Cannot connect to the Docker daemon").error
    assert docker_ps.parse("").containers == []


def test_ss_listening_ports() -> None:
    ls = listening.parse(capture("ss_Hltn_testbed_head_ray_vllm.txt"))
    assert ls.error is None
    assert {22, 6379, 8265, 8000} <= ls.ports


def test_container_state_and_probes() -> None:
    assert parse_state("running 0").running
    assert parse_state("exited 137").exit_code == 137
    assert parse_state("absent").status == "absent"
    assert parse_state("").status == "absent"
    p = raywait.parse_probe("running 0\n1\n")
    assert p.started and p.state.running
    assert not raywait.parse_probe("running 0\n0\n").started
    assert raywait.parse_probe("exited 1\n0\n").state.exit_code == 1


def test_vllm_probe() -> None:
    p = vllm.parse_probe("state=running 0\nexit=\npid=42\nlast=INFO: Application startup complete.\n")
    assert p.process_alive and p.exit_code is None and p.pid == "42"
    assert p.last_line == "INFO: Application startup complete."
    dead = vllm.parse_probe("state=running 0\nexit=137\npid=42\nlast=\n")
    assert dead.exit_code == 137 and not dead.process_alive
    gone = vllm.parse_probe("state=absent\nexit=\npid=\nlast=\n")
    assert not gone.container.running and not gone.process_alive
    # a log line containing "=" or "exit=" does not confuse the parser
    tricky = vllm.parse_probe("state=running 0\nexit=\npid=7\nlast=a=b exit=3\n")
    assert tricky.exit_code is None and tricky.last_line == "a=b exit=3"


def test_preflight_sections_split_one_round_trip_into_facts() -> None:
    from dgxcluster.serving.preflight import split_sections

    text = ("@@home\n/home/nvidia\n@@rc 0\n@@ps\n{\"ID\":\"a\"}\n@@rc 0\n@@image\n"
            "Error: No such image: x\n@@rc 1\n@@smi\nsh: 1: nvidia-smi: not found\n@@rc 127\n"
            "@@ss\nLISTEN 0 4096 *:6379 *:*\n")
    sec = split_sections(text)
    assert sec["home"] == ("/home/nvidia", 0)
    assert sec["image"][1] == 1 and sec["smi"][1] == 127
    assert sec["ss"] == ("LISTEN 0 4096 *:6379 *:*", -1)  # cut short: no exit status seen
