"""`dgxcluster metrics targets`: Prometheus targets from the inventory alone."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from dgxcluster.inventory.load import load_inventory
from dgxcluster.metrics import targets
from tests.conftest import run_cli

INVENTORY = """\
cluster: lab
head: s2
nodes:
  - {name: s1, host: spark1.lan, fabric_ip: 10.0.0.1}
  - {name: s2, host: "fd00::2", fabric_ip: 10.0.0.2}
  - {name: s3, host: 192.0.2.3, fabric_ip: 10.0.0.3}
ray: {metrics_export_port: 9101}
serve: {port: 8001}
"""


def inv(tmp_path: Path) -> Path:
    p = tmp_path / "inv.yaml"
    p.write_text(INVENTORY)
    return p


def test_vllm_on_the_head_and_ray_on_every_node(tmp_path: Path) -> None:
    groups = targets.groups(load_inventory(inv(tmp_path)))
    assert [(g.job, g.targets, g.labels["node"], g.labels["role"]) for g in groups] == [
        ("vllm", ["[fd00::2]:8001"], "s2", "head"),
        ("ray", ["spark1.lan:9101"], "s1", "worker"),
        ("ray", ["[fd00::2]:9101"], "s2", "head"),
        ("ray", ["192.0.2.3:9101"], "s3", "worker"),
    ]
    assert {g.labels["cluster"] for g in groups} == {"lab"}


def test_file_sd_json_is_what_file_sd_configs_reads(tmp_path: Path) -> None:
    doc = json.loads(targets.file_sd(load_inventory(inv(tmp_path))))
    assert doc[0] == {"targets": ["[fd00::2]:8001"],
                      "labels": {"job": "vllm", "cluster": "lab", "node": "s2", "role": "head"}}
    assert all(set(g) == {"targets", "labels"} for g in doc)


def test_yaml_is_a_scrape_configs_block(tmp_path: Path) -> None:
    doc = yaml.safe_load(targets.scrape_config(load_inventory(inv(tmp_path))))
    jobs = {j["job_name"]: j for j in doc["scrape_configs"]}
    assert set(jobs) == {"vllm", "ray"}
    assert jobs["vllm"]["metrics_path"] == "/metrics"
    assert [s["targets"] for s in jobs["ray"]["static_configs"]] == [
        ["spark1.lan:9101"], ["[fd00::2]:9101"], ["192.0.2.3:9101"]]


def test_the_default_ray_port_is_8080(tmp_path: Path) -> None:
    p = tmp_path / "inv.yaml"
    p.write_text("nodes:\n  - {name: a, host: a, fabric_ip: 10.0.0.1}\n")
    assert targets.groups(load_inventory(p))[1].targets == ["a:8080"]


def test_the_cli_prints_or_writes_and_refuses_a_bad_format(tmp_path: Path) -> None:
    path = str(inv(tmp_path))
    out = run_cli("-i", path, "metrics", "targets", "--format", "file-sd", timeout=60)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)[1]["targets"] == ["spark1.lan:9101"]
    dest = tmp_path / "targets.yaml"
    wrote = run_cli("-i", path, "metrics", "targets", "-o", str(dest), timeout=60)
    assert wrote.returncode == 0 and "scrape_configs" in dest.read_text()
    bad = run_cli("-i", path, "metrics", "targets", "--format", "toml", timeout=60)
    assert bad.returncode == 2 and "--format" in bad.stderr


def test_ray_starts_its_metrics_agent_where_the_targets_point(tmp_path: Path) -> None:
    """`start` runs `ray start --metrics-export-port` with the port the targets name."""
    from dgxcluster.serving.plan import ray_command

    loaded = load_inventory(inv(tmp_path))
    ports = {g.labels["node"]: g.targets[0].rsplit(":", 1)[1] for g in targets.groups(loaded)
             if g.job == "ray"}
    for node in ("s1", "s2", "s3"):
        argv = ray_command(loaded, node)
        assert f"--metrics-export-port={ports[node]}" in argv, argv
