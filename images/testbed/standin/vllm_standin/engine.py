"""The engine side of the stand-in: join Ray, reserve GPUs the way vLLM's Ray executor does
(one {"GPU": 1} bundle per rank, the first pinned to this node, strategy PACK), start one
worker actor per bundle, then pretend to load the model. Errors use vLLM's own wording.
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from collections import defaultdict
from typing import Any

import ray
from ray.util.placement_group import placement_group, placement_group_table, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from vllm_standin import NAME
from vllm_standin.load import float_env, load_model

DEVICE = "GPU"
WORKER_ENV = ("VLLM_HOST_IP", "NCCL_SOCKET_IFNAME", "GLOO_SOCKET_IFNAME", "NCCL_IB_HCA",
              "CUDA_VISIBLE_DEVICES")


def get_ip() -> str:
    """vLLM's rule: VLLM_HOST_IP if set, else the address Ray uses for this node."""
    return os.environ.get("VLLM_HOST_IP") or ray.util.get_node_ip_address()


@ray.remote(num_cpus=0)
class RayWorkerWrapper:
    """Stands for vLLM's per-GPU worker: reports where it runs and what environment it got."""

    def info(self) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "node_id": ray.get_runtime_context().get_node_id(),
            "ip": os.environ.get("VLLM_HOST_IP") or ray.util.get_node_ip_address(),
            "ray_ip": ray.util.get_node_ip_address(),
            "gpu_ids": ray.get_gpu_ids(),
            "env": {k: os.environ.get(k, "") for k in WORKER_ENV},
        }

    def ping(self) -> bool:
        return True


class Engine:
    def __init__(self, args: argparse.Namespace, log: logging.Logger) -> None:
        self.args = args
        self.log = log
        self.world_size = args.tensor_parallel_size * args.pipeline_parallel_size
        self.pg: Any = None
        self.workers: list[Any] = []
        self.dead: str | None = None

    def start(self) -> None:
        if self.world_size > 1 and self.args.distributed_executor_backend not in (None, "ray"):
            raise SystemExit(f"{NAME} emulates --distributed-executor-backend ray and mp only")
        self._init_ray_cluster()
        self._init_workers()
        self._load_model()

    def _init_ray_cluster(self) -> None:
        ray.init(address="auto", logging_level=logging.WARNING)
        self.log.info("Connected to the Ray cluster: %s", {k: v for k, v in ray.cluster_resources().items()
                                                          if not k.startswith("node:")})
        self.log.info("No current placement group found. Creating a new placement group.")
        if self.world_size > ray.cluster_resources().get(DEVICE, 0):
            self.log.warning("The number of required %ss exceeds the total number of available "
                             "%ss in the placement group.", DEVICE, DEVICE)
        specs: list[dict[str, float]] = [{DEVICE: 1.0} for _ in range(self.world_size)]
        current_ip = get_ip()
        node_id = ray.get_runtime_context().get_node_id()
        from ray._private.state import available_resources_per_node

        node_resource = available_resources_per_node().get(node_id, {})
        if node_resource.get(DEVICE, 0) < 1:
            raise ValueError(
                f"Current node has no {DEVICE} available. current_node_resource={node_resource!r}. "
                f"vLLM engine cannot start without {DEVICE}. Make sure you have at least 1 {DEVICE} "
                f"available in a node current_node_id={node_id!r} current_ip={current_ip!r}.")
        specs[0][f"node:{current_ip}"] = 0.001
        self.pg = placement_group(specs, strategy="PACK")
        self._wait_until_pg_ready(specs)
        self._verify_bundles()

    def _wait_until_pg_ready(self, specs: list[dict[str, float]]) -> None:
        timeout = float_env("DGXCLUSTER_STANDIN_PG_TIMEOUT_S", 1800.0)
        s = time.time()
        ref = self.pg.ready()
        interval = 10.0
        while time.time() - s < timeout:
            ready, _ = ray.wait([ref], timeout=min(interval, max(0.1, timeout - (time.time() - s))))
            if ready:
                return
            interval *= 2
            self.log.info(
                "Waiting for creating a placement group of specs for %d seconds. specs=%s. Check "
                "`ray status` and `ray list nodes` to see if you have enough resources, and make "
                "sure the IP addresses used by ray cluster are the same as VLLM_HOST_IP "
                "environment variable specified in each node if you are running on a multi-node.",
                int(time.time() - s), specs)
        total = sum(spec.get(DEVICE, 0) for spec in specs)
        if total > 1:
            raise ValueError(
                f"Cannot provide a placement group requiring {total} GPUs "
                f"(placement_group_specs={specs}) within {timeout:g} seconds.\n"
                "Tensor parallel size may exceed available GPUs in your cluster. Check resources "
                "with `ray status` and `ray list nodes`.\n"
                "If running on K8s with limited GPUs, consider reducing --tensor-parallel-size "
                "to match available GPU resources.")
        raise ValueError(
            f"Cannot provide a placement group of placement_group_specs={specs} within "
            f"{timeout:g} seconds. See `ray status` and `ray list nodes` to make sure the "
            "cluster has enough resources.")

    def _verify_bundles(self) -> None:
        table = placement_group_table(self.pg)
        per_node: dict[str, list[Any]] = defaultdict(list)
        for idx, node_id in table["bundles_to_node_id"].items():
            per_node[node_id].append(table["bundles"][idx])
        for node_id, bundles in per_node.items():
            if len(bundles) < self.args.tensor_parallel_size:
                self.log.warning(
                    "tensor_parallel_size=%d is bigger than a reserved number of %ss (%d %ss) in "
                    "a node %s. Tensor parallel workers can be spread out to 2+ nodes which can "
                    "degrade the performance unless you have fast interconnect across nodes, "
                    "like Infiniband. To resolve this issue, make sure you have more than %d "
                    "GPUs available at each node.", self.args.tensor_parallel_size, DEVICE,
                    len(bundles), DEVICE, node_id, self.args.tensor_parallel_size)

    def _init_workers(self) -> None:
        for rank in range(self.world_size):
            strategy = PlacementGroupSchedulingStrategy(
                placement_group=self.pg, placement_group_capture_child_tasks=True,
                placement_group_bundle_index=rank)
            self.workers.append(RayWorkerWrapper.options(  # type: ignore[attr-defined]
                num_gpus=1, scheduling_strategy=strategy).remote())
        infos = ray.get([w.info.remote() for w in self.workers], timeout=600)
        node_ids = {i["node_id"] for i in infos}
        ips = sorted({i["ip"] for i in infos})
        for rank, i in enumerate(infos):
            env = " ".join(f"{k}={v}" for k, v in i["env"].items())
            self.log.info("(RayWorkerWrapper pid=%d, ip=%s) %s worker rank %d: GPU ids %s; %s",
                          i["pid"], i["ray_ip"], NAME, rank, i["gpu_ids"], env)
        if len(node_ids) != len(ips):
            raise RuntimeError(
                f"Every node should have a unique IP address. Got {len(node_ids)} nodes with node "
                f"ids {sorted(node_ids)} and {len(ips)} unique IP addresses {ips}. Please check "
                "your network configuration. If you set `VLLM_HOST_IP` environment variable, make "
                "sure it is unique for each node.")

    def _load_model(self) -> None:
        load_model(self.args.model, self.log)

    def check_alive(self) -> None:
        """Raise if a worker died (a node lost): vLLM's engine dies with it."""
        ray.get([w.ping.remote() for w in self.workers], timeout=30)

    def shutdown(self) -> None:
        for w in self.workers:
            try:
                ray.kill(w)
            except Exception:
                pass
        if self.pg is not None:
            try:
                remove_placement_group(self.pg)
            except Exception:
                pass
        ray.shutdown()
