"""Which nodes serve, and which rank runs where: TP x PP (x DP) over the inventory's nodes,
the head first. Pure; the inventory refuses at load what cannot be placed when the file sets
the sizes (`problems`), `start` asks `problem` with the defaults too.

Ranks follow vLLM's order (vllm/config/parallel.py, engine/arg_utils.py): within a replica,
rank = pp_stage * TP + tp_rank; replica d holds ranks d * TP * PP onwards; node k of the
serving list holds the k-th block of `gpus_per_node` ranks. A replica larger than a node
spans whole nodes (`--nnodes`, vLLM's `nnodes_within_dp`); smaller ones share a node.

No node sits idle silently: when TP x PP x DP fills fewer nodes than the inventory has, the
left-out nodes are named, and `serve.nodes` must list the ones that serve.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise
from typing import TYPE_CHECKING

from dgxcluster.inventory import topology

if TYPE_CHECKING:
    from dgxcluster.inventory.schema import InventoryModel

Problem = tuple[tuple[str | int, ...], str]
SIZES = ("tensor_parallel_size", "pipeline_parallel_size", "data_parallel_size")


@dataclass(frozen=True)
class Rank:
    rank: int  # global: dp * (TP * PP) + pp * TP + tp
    node: str
    dp: int
    pp: int
    tp: int
    gpu: int  # the GPU's index on its node


@dataclass(frozen=True)
class Placement:
    tp: int
    pp: int
    dp: int
    gpus_per_node: int
    nodes: tuple[str, ...]  # the serving nodes, head first
    idle: tuple[str, ...]  # inventory nodes that do not serve

    @property
    def replica_gpus(self) -> int:
        return self.tp * self.pp

    @property
    def world(self) -> int:
        return self.replica_gpus * self.dp

    @property
    def nodes_per_replica(self) -> int:
        """Nodes one replica spans (1 when it fits on a node)."""
        return max(1, -(-self.replica_gpus // max(self.gpus_per_node, 1)))

    @property
    def ranks(self) -> tuple[Rank, ...]:
        out = []
        for r in range(self.world):
            dp, within = divmod(r, self.replica_gpus)
            pp, tp = divmod(within, self.tp)
            node, gpu = divmod(r, max(self.gpus_per_node, 1))
            out.append(Rank(r, self.nodes[node], dp, pp, tp, gpu))
        return tuple(out)

    def replica_nodes(self, dp: int) -> tuple[str, ...]:
        return tuple(dict.fromkeys(r.node for r in self.ranks if r.dp == dp))

    def node_rank(self, node: str) -> int:
        return self.nodes.index(node)

    def describe(self) -> str:
        sizes = f"TP {self.tp} x PP {self.pp}" + (f" x DP {self.dp}" if self.dp > 1 else "")
        idle = f"; not serving: {', '.join(self.idle)}" if self.idle else ""
        return f"{sizes} on {', '.join(self.nodes)} (head {self.nodes[0]}){idle}"


def serving_nodes(inv: InventoryModel) -> list[str]:
    """serve.nodes (or every node), the head moved first; unknown names kept for problems()."""
    head = inv.head_name
    listed = list(inv.serve.nodes) if inv.serve.nodes is not None else list(inv.names)
    return [head, *[n for n in dict.fromkeys(listed) if n != head]] if head in listed else listed


def place(inv: InventoryModel) -> Placement:
    """The placement of a cluster whose `problem(inv)` is None."""
    s = inv.serve
    serving = serving_nodes(inv)
    per = inv.gpus_per_node
    needed = -(-s.tensor_parallel_size * s.pipeline_parallel_size * s.data_parallel_size
               // max(per, 1))
    nodes = tuple(serving[:needed])
    return Placement(s.tensor_parallel_size, s.pipeline_parallel_size, s.data_parallel_size, per,
                     nodes, tuple(n for n in inv.names if n not in nodes))


def serving(inv: InventoryModel) -> tuple[str, ...]:
    """The nodes `start` runs on (the placement's), or every node while the sizes cannot be
    placed (start refuses then; status and nodes still show every node)."""
    return place(inv).nodes if problem(inv) is None else tuple(inv.names)


def problem(inv: InventoryModel) -> str | None:
    """The first reason the serve sizes cannot be placed, or None (start asks this)."""
    found = _problems(inv)
    return found[0][1] if found else None


def problems(inv: InventoryModel) -> list[Problem]:
    """What to refuse at load: everything when the file sets a size, serve.nodes or the native
    executor; with the defaults nothing (a one-node inventory still runs exec and build;
    start checks them)."""
    set_ = inv.serve.model_fields_set
    # a file that asks for the native executor asks for its placement too
    native = inv.serve.executor == "native" and "executor" in set_
    explicit = set(SIZES) & set_ or "nodes" in set_ or native
    return _problems(inv) if explicit else []


def _key(inv: InventoryModel, prefer_nodes: bool = False) -> tuple[str | int, ...]:
    set_ = inv.serve.model_fields_set
    if prefer_nodes and "nodes" in set_:
        return ("serve", "nodes")
    return ("serve", next((k for k in SIZES if k in set_), SIZES[0]))


def _problems(inv: InventoryModel) -> list[Problem]:
    listed = _list_problems(inv)
    if listed:
        return listed
    size = _size_problem(inv)
    if size:
        return [size]
    return _executor_problems(inv) + _order_problems(inv)


def _list_problems(inv: InventoryModel) -> list[Problem]:
    if inv.serve.nodes is None:
        return []
    errors: list[Problem] = []
    seen: set[str] = set()
    for i, name in enumerate(inv.serve.nodes):
        if name not in inv.names:
            errors.append((("serve", "nodes", i), f"names no node: {name!r} "
                           f"(nodes: {', '.join(inv.names)})"))
        elif name in seen:
            errors.append((("serve", "nodes", i), f"{name} is listed twice"))
        seen.add(name)
    if inv.head_name not in seen:
        errors.append((("serve", "nodes"), f"must include the head {inv.head_name}: it runs "
                       "vLLM's API server and rank 0"))
    return errors


def _sizes(inv: InventoryModel) -> str:
    s = inv.serve
    text = (f"tensor_parallel_size {s.tensor_parallel_size} x pipeline_parallel_size "
            f"{s.pipeline_parallel_size}")
    return text + (f" x data_parallel_size {s.data_parallel_size}" if s.data_parallel_size > 1
                   else "")


def _size_problem(inv: InventoryModel) -> Problem | None:
    s = inv.serve
    per = inv.gpus_per_node
    replica = s.tensor_parallel_size * s.pipeline_parallel_size
    world = replica * s.data_parallel_size
    serving = serving_nodes(inv)
    have = per * len(serving)
    source = ("ray.num_gpus" if inv.ray.num_gpus is not None
              else "one per DGX Spark; set ray.num_gpus for another count")
    of_nodes = (f"the {len(serving)} node(s) of serve.nodes" if s.nodes is not None
                else f"the {len(serving)} node(s)")
    if world > have:
        return _key(inv), (f"{_sizes(inv)} needs {world} GPUs, but {of_nodes} have {have} "
                           f"({per} each: {source})")
    if per and (replica % per if replica > per else per % replica):
        return _key(inv), (f"a replica of tensor_parallel_size x pipeline_parallel_size = "
                           f"{replica} GPUs neither fills whole nodes of {per} GPUs nor shares "
                           "one evenly")
    if world < have:
        used = -(-world // max(per, 1))
        idle = serving[used:]
        if s.nodes is not None:
            return _key(inv, prefer_nodes=True), (
                f"lists {len(serving)} nodes, but {_sizes(inv)} = {world} GPUs fill {used}: "
                f"{', '.join(idle)} would sit idle; list {used} node(s), or raise the sizes")
        return _key(inv), (f"{_sizes(inv)} = {world} GPUs fill {used} of the {len(serving)} "
                           f"nodes: {', '.join(idle)} would sit idle; list the nodes that serve "
                           "in serve.nodes (head first), or use every node (data_parallel_size "
                           "for replicas, pipeline_parallel_size)")
    return None


def _executor_problems(inv: InventoryModel) -> list[Problem]:
    executor = inv.serve.executor
    if inv.serve.data_parallel_size > 1 and executor != "native":
        return [(("serve", "data_parallel_size"), "data-parallel needs serve.executor: native "
                 "(replicas run behind vLLM's own data-parallel front end, which the native "
                 f"executor launches on every node; the {executor} executor cannot)")]
    if executor == "native":
        found = native_problem(inv)
        if found:
            set_ = inv.serve.model_fields_set
            key = "executor" if "executor" in set_ and not set(SIZES) & set_ else _key(inv)[1]
            return [(("serve", key), found)]
    return []


def native_problem(inv: InventoryModel) -> str | None:
    """vLLM's multiproc executor runs one rank per serving node (`--nnodes` = the serving
    nodes) and splits the world size evenly: `MultiprocExecutor` asserts that TP x PP is
    divisible by nnodes, and each node runs TP x PP / nnodes workers, one per local GPU.
    With data parallel the same holds within a replica (vLLM's `nnodes_within_dp`): the
    nodes one replica spans (`_size_problem` already checked that replicas tile the nodes)."""
    tp, pp = inv.serve.tensor_parallel_size, inv.serve.pipeline_parallel_size
    world, nodes, per_node = tp * pp, len(serving_nodes(inv)), inv.gpus_per_node
    if inv.serve.data_parallel_size > 1:
        nodes = max(1, -(-world // max(per_node, 1)))
    if world % nodes:
        return (f"serve.executor native runs one vLLM rank on each of the {nodes} serving "
                f"node(s) (--nnodes {nodes}), which must share tensor_parallel_size {tp} x "
                f"pipeline_parallel_size {pp} = {world} GPUs evenly (vLLM requires the world size "
                f"to be divisible by --nnodes): use a multiple of {nodes}, list only the nodes "
                "that serve in serve.nodes, or serve.executor ray")
    if world // nodes > per_node:
        source = ("ray.num_gpus" if inv.ray.num_gpus is not None
                  else "one per DGX Spark; set ray.num_gpus for another count")
        return (f"serve.executor native puts {world // nodes} of the {world} GPUs "
                f"(tensor_parallel_size {tp} x pipeline_parallel_size {pp}) on each of the "
                f"{nodes} node(s), but a node has {per_node} ({source})")
    return None


def _order_problems(inv: InventoryModel) -> list[Problem]:
    """On a ring or mesh, consecutive ranks' nodes must share a cable: NCCL's RDMA cannot be
    routed through a node. Ray places workers itself, so it cannot keep a ring's order."""
    topo = topology.of(inv)
    if not topo.point_to_point:
        return []
    nodes = list(place(inv).nodes)
    if len(nodes) < 2:
        return []
    executor = inv.serve.executor
    if executor == "ray" and len(nodes) > 3 and not all(
            topo.neighbours(n) >= set(nodes) - {n} for n in nodes):
        return [(_key(inv, prefer_nodes=True), f"{len(nodes)} nodes of a {topo.kind} serve, but "
                 "Ray places vLLM's workers itself and cannot keep them in cable order (NCCL "
                 "reaches only neighbours); use the native executor, a switch, or at most three "
                 "nodes of the ring")]
    ring = nodes + nodes[:1] if len(nodes) > 2 else nodes
    missing = [(a, b) for a, b in pairwise(ring) if b not in topo.neighbours(a)]
    if missing:
        a, b = missing[0]
        return [(_key(inv, prefer_nodes=True), f"{a} and {b} hold consecutive ranks but no cable "
                 f"joins them ({topo.kind}): NCCL cannot reach a node through another; order "
                 "serve.nodes along the cables")]
    return []
