"""Prometheus scrape targets for a cluster, from the inventory alone: vLLM's `/metrics` on the
head (rank 0, where the API server runs, `serve.port`) and Ray's metrics agent on every node.

Ray runs one metrics agent per node (part of the dashboard agent, `ray[default]`), serving
Prometheus text on `--metrics-export-port`; without that flag the port is random
(ray/_private/node.py, Ray 2.60), so the inventory's `ray.metrics_export_port` names it. Ray
also writes its own file_sd list on the head, `/tmp/ray/prom_metrics_service_discovery.json`
(ray/_private/metrics_agent.py, PrometheusServiceDiscoveryWriter; docs.ray.io "Collecting and
monitoring metrics"), but inside the head container and with each node's Ray address, which
here is the fabric IP, usually reachable only between the Sparks. These targets use each
node's `host`, the address this machine reaches it by.

Two shapes: file_sd target groups (JSON, for `file_sd_configs`, labels include `job` as
Ray's own file does) and a `scrape_configs` block (YAML) to paste into prometheus.yml.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING

from dgxcluster.core.endpoint import host_port

if TYPE_CHECKING:
    from dgxcluster.inventory.schema import InventoryModel

VLLM_JOB = "vllm"
RAY_JOB = "ray"
METRICS_PATH = "/metrics"


@dataclass(frozen=True)
class TargetGroup:
    job: str
    targets: list[str]
    labels: dict[str, str]

    def file_sd(self) -> dict[str, object]:
        return {"targets": self.targets, "labels": {"job": self.job, **self.labels}}


def groups(inv: InventoryModel) -> list[TargetGroup]:
    head = inv.head_node
    out = [TargetGroup(VLLM_JOB, [host_port(head.host, inv.serve.port)],
                       {"cluster": inv.cluster, "node": head.name, "role": "head"})]
    for node in inv.nodes:
        role = "head" if node.name == head.name else "worker"
        out.append(TargetGroup(RAY_JOB, [host_port(node.host, inv.ray.metrics_export_port)],
                               {"cluster": inv.cluster, "node": node.name, "role": role}))
    return out


def file_sd(inv: InventoryModel) -> str:
    """JSON target groups for Prometheus' file_sd_configs."""
    return json.dumps([g.file_sd() for g in groups(inv)], indent=2) + "\n"


def scrape_config(inv: InventoryModel) -> str:
    """A `scrape_configs:` block, one job for vLLM and one for Ray."""
    import yaml

    jobs: dict[str, list[dict[str, object]]] = {}
    for g in groups(inv):
        jobs.setdefault(g.job, []).append({"targets": g.targets, "labels": g.labels})
    doc = {"scrape_configs": [{"job_name": job, "metrics_path": METRICS_PATH,
                               "static_configs": static} for job, static in jobs.items()]}
    head = (f"# Prometheus scrape config for dgxcluster cluster {inv.cluster!r}: vLLM's /metrics "
            f"on the head, Ray's metrics agent (port ray.metrics_export_port) on every node.\n")
    return head + yaml.safe_dump(doc, sort_keys=False, default_flow_style=False)
