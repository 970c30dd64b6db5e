"""What `status` reports, built from each node's probe (pure: no I/O here).

Per node: reachable, Docker, the image (content tag and ID), the dgxcluster containers.
Cluster-wide: whether every node holds the same image, and whether it is the one the
inventory's build context gives; Ray (nodes alive, GPUs); vLLM (health, models, endpoint).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from dgxcluster.core.endpoint import EndpointProbe
from dgxcluster.core.imageid import NodeImage, compare
from dgxcluster.core.naming import (
    LABEL_CONFIG,
    LABEL_CONTENT_TAG,
    LABEL_EXECUTOR,
    LABEL_ROLE,
    is_pull_tag,
)
from dgxcluster.core.steps import Outcome, Status
from dgxcluster.facts import ParseError, meminfo, nvidia_smi, ray_status
from dgxcluster.facts.vllm_metrics import ServingMetrics
from dgxcluster.status.probe import Container, Image, NodeProbe, parse_api, parse_docker

if TYPE_CHECKING:
    from dgxcluster.status.ranks import RankStatus


@dataclass
class ContainerState:
    name: str
    role: str
    state: str
    uptime_s: int | None
    since_s: int | None  # for a stopped container: how long ago it stopped
    exit_code: int | None
    health: str | None
    image_ref: str
    image_id: str
    status_text: str = ""
    executor: str | None = None  # its `dgxcluster.executor` label (ray | native)
    config: str | None = None  # its `dgxcluster.config` label (the config hash it runs)

    def describe(self) -> str:
        if self.state == "running":
            text = f"{self.role} running {human_age(self.uptime_s)}"
            if self.health:
                text += f" ({self.health})"
            return text
        if self.since_s is None and self.status_text:
            return f"{self.role} {self.status_text[:1].lower()}{self.status_text[1:]}"
        ago = f" {human_age(self.since_s)} ago" if self.since_s is not None else ""
        code = f" (exit {self.exit_code})" if self.exit_code is not None else ""
        return f"{self.role} {self.state}{code}{ago}"

    def to_json(self) -> dict[str, object]:
        return dict(self.__dict__)


@dataclass
class ImageState:
    """What `<image>:current` is on a node (both None: there is no such tag)."""

    content_tag: str | None
    image_id: str | None
    tags: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, object]:
        return {"content_tag": self.content_tag, "id": self.image_id, "tags": self.tags}


@dataclass
class NodeStatus:
    node: str
    role: str
    reachable: bool
    error: str | None = None
    docker: bool | None = None
    docker_error: str | None = None
    image: ImageState | None = None
    containers: list[ContainerState] = field(default_factory=list)
    gpu: str | None = None
    gpu_error: str | None = None
    gpus: list[nvidia_smi.Gpu] = field(default_factory=list)  # utilisation, temperature, power
    memory: meminfo.Memory | None = None
    memory_error: str | None = None

    def to_json(self) -> dict[str, object]:
        return {
            "node": self.node,
            "role": self.role,
            "reachable": self.reachable,
            "error": self.error,
            "docker": {"running": self.docker, "error": self.docker_error},
            "image": self.image.to_json() if self.image else None,
            "containers": [c.to_json() for c in self.containers],
            "gpu": self.gpu,
            "gpu_error": self.gpu_error,
            "gpus": [asdict(g) for g in self.gpus],
            "memory": self.memory.to_json() if self.memory else None,
            "memory_error": self.memory_error,
        }


@dataclass
class ImageSummary:
    name: str
    expected_tag: str | None
    expected_error: str | None
    consistent: bool  # every node's `current` has the same content tag
    matches_expected: bool | None
    detail: str
    ids_match: bool | None = None  # same image ID too (not with strategy `each`)

    def to_json(self) -> dict[str, object]:
        return dict(self.__dict__)


#: How often Ray's autoscaler refreshes the cluster status that `ray status` and the
#: dashboard print (Ray's `AUTOSCALER_UPDATE_INTERVAL_S`, ray/autoscaler/_private/constants.py).
RAY_REFRESH_S = 5


@dataclass
class RaySummary:
    state: str  # up | down | unknown
    nodes_alive: int | None = None
    nodes_expected: int = 0
    gpus_total: float | None = None
    gpus_used: float | None = None
    gpus_reserved: float | None = None
    error: str | None = None
    #: Ray's counts are behind what the nodes show (its snapshot is up to RAY_REFRESH_S old).
    lagging: bool = False

    def describe(self) -> str:
        if self.state != "up":
            return f"{self.state}: {self.error}" if self.error else self.state
        text = f"{self.nodes_alive}/{self.nodes_expected} nodes alive"
        if self.gpus_total is not None:
            text += f", GPUs {_num(self.gpus_used)}/{_num(self.gpus_total)} used"
            if self.gpus_reserved:
                text += f" ({_num(self.gpus_reserved)} reserved by placement groups)"
        if self.lagging:
            text += f" (Ray's view is refreshed every {RAY_REFRESH_S} s)"
        return text

    def to_json(self) -> dict[str, object]:
        return dict(self.__dict__)


@dataclass
class VllmProcess:
    """vLLM as `start` launched it in the head container (None fields: not known)."""

    state: str  # running (loading or serving) | exited | absent
    exit_code: int | None = None
    last_line: str | None = None

    def describe(self) -> str:
        line = f": {self.last_line}" if self.last_line else ""
        if self.state == "exited":
            return f"vLLM exited ({self.exit_code}){line}"
        if self.state == "running":
            return f"vLLM process running (loading?){line}"
        return "no vLLM process"

    def to_json(self) -> dict[str, object]:
        return dict(self.__dict__)


@dataclass
class Healing:
    """A node's watcher (`serve.restart: on-failure`), as its state file says."""

    state: str  # watching | restarting | starting | gave up | stopped
    restarts: int = 0
    last: dict[str, object] | None = None  # the last restart record: time, what, why, exit

    def describe(self) -> str:
        n = f"{self.restarts} restart(s)"
        if not self.last:
            return f"{self.state}, {n}"
        last = self.last
        code = f", exit {last['exit']}" if last.get("exit") is not None else ""
        return f"{self.state}, {n}; last {last.get('time', '?')}: {last.get('what', '?')}: " \
               f"{last.get('why', '?')}{code}"

    def to_json(self) -> dict[str, object]:
        return dict(self.__dict__)


def healing(probe: NodeProbe | None, redact: Callable[[str], str]) -> Healing | None:
    """From the head's status round (its `vllm` section); None when no watcher ever ran."""
    sec = probe.section("vllm") if probe else None
    line = next((ln for ln in sec.text.splitlines() if ln.startswith("supervisor ")), None) \
        if sec else None
    if line is None:
        return None
    try:
        doc = json.loads(redact(line.split(" ", 1)[1]))
    except (ValueError, IndexError):
        return Healing("unknown (state file unreadable)")
    last = doc.get("last") if isinstance(doc.get("last"), dict) else None
    return Healing(str(doc.get("state", "unknown")), int(doc.get("restarts", 0) or 0), last)


@dataclass
class ClusterStatus:
    cluster: str
    head: str
    nodes: list[NodeStatus]
    image: ImageSummary
    ray: RaySummary
    vllm: EndpointProbe
    vllm_process: VllmProcess | None = None
    serving: ServingMetrics | None = None  # rank 0's /metrics, when it answered
    serving_error: str | None = None
    auth: str = "off"  # the endpoint's API key (serve.api_key): "off" or "on (NAME)"
    healing: Healing | None = None  # the head's watcher, when one ran
    #: Ray: each worker node's own watcher (it keeps the Ray worker container up), when one ran
    worker_healing: dict[str, Healing] = field(default_factory=dict)
    executor: str = "ray"  # what runs (the head container's label), else serve.executor
    ranks: list[RankStatus] | None = None  # native: one row per vLLM rank, in place of Ray
    layout: str | None = None  # the sizes: "TP 2", "DP 2 x TP 1" (core.ranks.layout)
    #: serve.persist: "installed (matches running config)" | "installed (stale: ...)" | "off"
    persist: str = "off"
    persist_nodes: dict[str, str] = field(default_factory=dict)  # each node's own line

    @property
    def unreachable(self) -> list[str]:
        return [n.node for n in self.nodes if not n.reachable]

    @property
    def outcomes(self) -> list[Outcome]:
        """Status only reads: a node that answered is `unchanged`, whatever runs there."""
        return [Outcome(n.node, "status", Status.UNCHANGED if n.reachable else
                        Status.UNREACHABLE, n.error or "") for n in self.nodes]

    def to_json(self) -> dict[str, object]:
        return {
            "cluster": self.cluster,
            "head": self.head,
            "nodes": [n.to_json() for n in self.nodes],
            "image": self.image.to_json(),
            "ray": self.ray.to_json(),
            "vllm": {**self.vllm.to_json(), "process": self.vllm_process.to_json()
                     if self.vllm_process else None,
                     "metrics": self.serving.to_json() if self.serving else None,
                     "metrics_error": self.serving_error, "auth": self.auth,
                     "healing": self.healing.to_json() if self.healing else None,
                     "worker_healing": {n: h.to_json() for n, h in self.worker_healing.items()}},
            "executor": self.executor,
            "layout": self.layout,
            "persist": {"state": self.persist, "nodes": self.persist_nodes},
            "ranks": [r.to_json() for r in self.ranks] if self.ranks is not None else None,
        }


def _num(x: float | None) -> str:
    if x is None:
        return "?"
    return f"{x:g}"


def human_age(seconds: int | None) -> str:
    if seconds is None:
        return "?"
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def _first_line(text: str) -> str:
    return next((ln.strip() for ln in text.splitlines() if ln.strip()), "")


def node_status(node: str, role: str, probe: NodeProbe) -> NodeStatus:
    st = NodeStatus(node, role, reachable=True)
    api, cli = probe.section("api"), probe.section("docker")
    docker = api or cli
    if docker is None or docker.rc is None:
        st.error = "the status script was cut short"
        return st
    error = None
    image: Image | None = None
    containers: list[Container] = []
    if docker.rc != 0:
        error = _first_line(docker.text.split("\n", 1)[-1] if api else docker.text)
        error = error or f"docker exited {docker.rc}"
        if api:
            sock = docker.text.split("\n", 1)[0]
            error = f"Cannot connect to the Docker daemon at unix://{sock}: {error}"
    if api and error is None:
        image, containers, error = parse_api(api.text)
    elif error is None:
        image, containers = parse_docker(docker.text)
    if error is not None:
        st.docker = False
        st.docker_error = error
    else:
        st.docker = True
        st.image = image_state(image)
        now = datetime.fromtimestamp(probe.now, timezone.utc) if probe.now else None
        st.containers = [container_state(c, now) for c in containers]
    gpu = probe.section("gpu")
    if gpu is not None:
        st.gpu, st.gpu_error = gpu_summary(gpu.text, gpu.rc)
        if st.gpu is not None:
            st.gpus = nvidia_smi.read(gpu.text).gpus
    mem = probe.section("mem")
    if mem is not None:
        st.memory, st.memory_error = memory(mem.text, mem.rc)
    return st


def memory(text: str, rc: int | None) -> tuple[meminfo.Memory | None, str | None]:
    try:
        return meminfo.parse(text), None
    except ParseError as exc:
        return None, str(exc) if rc == 0 else f"{_first_line(text) or exc} (exit {rc})"


def image_state(image: Image | None) -> ImageState:
    """`current`'s content tag is its `dgxcluster.content-tag` label, as `build` sets it; a
    pulled image has no such label (its bytes are the registry's), so its `pull-<hex>` tag."""
    if image is None:
        return ImageState(None, None)
    pulled = next((t.rsplit(":", 1)[1] for t in image.tags
                   if ":" in t and is_pull_tag(t.rsplit(":", 1)[1])), None)
    return ImageState(image.labels.get(LABEL_CONTENT_TAG) or pulled, image.id, image.tags)


def container_state(c: Container, now: datetime | None) -> ContainerState:
    uptime = since = None
    # from the API there is only the creation time: dgxcluster never restarts its containers
    started = c.started_at or c.created
    if now is not None and c.running and started is not None:
        uptime = int((now - started).total_seconds())
    if now is not None and not c.running and c.finished_at is not None:
        since = int((now - c.finished_at).total_seconds())
    return ContainerState(
        name=c.name,
        role=c.labels.get(LABEL_ROLE, "?"),
        state=c.state,
        uptime_s=uptime,
        since_s=since,
        exit_code=None if c.running else c.exit_code,
        health=c.health,
        image_ref=c.image_ref,
        image_id=c.image_id,
        status_text=c.status_text,
        executor=c.labels.get(LABEL_EXECUTOR),
        config=c.labels.get(LABEL_CONFIG),
    )


NO_SMI = "no nvidia-smi on this node"
SIMULATED = "simulated hardware"


def gpu_summary(text: str, rc: int | None) -> tuple[str | None, str | None]:
    if rc == 127 or ("not found" in text.lower() and "nvidia-smi" in text.lower()):
        return None, NO_SMI
    try:
        smi = nvidia_smi.parse(text)
    except ParseError as exc:
        return None, str(exc)
    if smi.error:
        return None, f"nvidia-smi: {smi.error}"
    if not smi.gpus:
        return None, "nvidia-smi lists no GPU"
    parts = []
    for g in smi.gpus:
        util = f" {g.utilization_pct}%" if g.utilization_pct is not None else ""
        temp = f" {g.temperature_c}C" if g.temperature_c is not None else ""
        parts.append(f"{g.name}{util}{temp}")
    procs = [p for p in smi.processes if "C" in p.type]
    if procs:
        parts.append(f"{len(procs)} compute process(es)")
    if SIMULATED in text:  # the testbed's stand-in tools say so; so do we
        parts.append(SIMULATED)
    return ", ".join(parts), None


def image_summary(name: str, nodes: list[NodeStatus], expected_tag: str | None,
                  expected_error: str | None) -> ImageSummary:
    """Same content tag on every node (the verdict of `core.imageid.compare`), the
    same image ID too (true after `distribute`; `each` gives equal content, other IDs), and
    whether it is the tag the build context gives today."""
    states: dict[str, NodeImage] = {}
    for n in nodes:
        if not n.reachable:
            states[n.node] = NodeImage(n.node, error=f"unreachable: {n.error}", unreachable=True)
        elif n.error or not n.docker or n.image is None:
            states[n.node] = NodeImage(n.node, error=f"docker: {n.docker_error or n.error}")
        else:
            states[n.node] = NodeImage(n.node, current_tag=n.image.content_tag,
                                       current_id=n.image.image_id)
    verdict = compare(states)
    ids = {s.current_id for s in states.values() if s.current_id}
    ids_match = len(ids) == 1 if ids else None
    answered = [s.current_tag for s in states.values() if not s.error]
    # every node that answered holds the tag the build context gives today
    matches = None if expected_tag is None or not answered else all(
        t == expected_tag for t in answered)
    if not verdict.consistent:
        return ImageSummary(name, expected_tag, expected_error, False, matches,
                            verdict.explain(), ids_match)
    tag = verdict.content_tag or ""
    if ids_match:
        short = next(iter(ids)).removeprefix("sha256:")[:12]
        detail = f"{name}:{tag} (image {short}) on every node"
    else:
        detail = f"{name}:{tag} on every node (image IDs differ: built on each node)"
    if matches is False:
        what = "image.ref" if expected_tag and is_pull_tag(expected_tag) else "the build context"
        detail += f"; {what} now gives {expected_tag}: run dgxcluster build --all-nodes"
    return ImageSummary(name, expected_tag, expected_error, True, matches, detail, ids_match)


def ray_summary(head: str, probe: NodeProbe | None, expected_nodes: int) -> RaySummary:
    if probe is None:
        return RaySummary("unknown", nodes_expected=expected_nodes,
                          error=f"head node {head} did not report")
    sec = probe.section("ray")
    if sec is None or sec.rc is None:
        return RaySummary("unknown", nodes_expected=expected_nodes, error="no answer from the head")
    if sec.rc != 0:
        reason = _first_line(sec.text) or f"exit {sec.rc}"
        if sec.rc == 7 or "refused" in reason.lower() or "Couldn't connect" in reason:
            return RaySummary("down", nodes_expected=expected_nodes,
                              error=f"no Ray dashboard on {head}")
        return RaySummary("unknown", nodes_expected=expected_nodes, error=reason)
    rs = ray_status.parse_dashboard(sec.text)
    if rs.error:
        return RaySummary("unknown", nodes_expected=expected_nodes, error=rs.error)
    gpus = rs.gpu_usage
    return RaySummary(
        "up",
        nodes_alive=rs.nodes,
        nodes_expected=expected_nodes,
        gpus_total=gpus.total if gpus else 0.0,
        gpus_used=gpus.used if gpus else 0.0,
        gpus_reserved=gpus.reserved if gpus else None,
    )


def ray_lags(ray: RaySummary, nodes: Sequence[NodeStatus], gpus_per_node: int,
             gpus_in_use: int) -> bool:
    """Whether Ray's counts disagree with what the nodes show: fewer nodes or GPUs than the
    running Ray containers bring, or fewer GPUs used than a ready vLLM's Ray workers hold
    (`gpus_in_use`: TP x PP x DP, 0 when vLLM is not ready). Ray's snapshot lags by up to
    RAY_REFRESH_S (right after `start`: "GPUs 0/4 used"), so the line says so."""
    if ray.state != "up":
        return False
    running = sum(1 for n in nodes if any(c.state == "running" and c.role in ("head", "worker")
                                          for c in n.containers))
    if (ray.nodes_alive or 0) < running:
        return True
    if ray.gpus_total is not None and ray.gpus_total < running * gpus_per_node:
        return True
    return ray.gpus_used is not None and ray.gpus_used < gpus_in_use


def vllm_process(probe: NodeProbe | None, head: NodeStatus | None,
                 redact: Callable[[str], str]) -> VllmProcess | None:
    """Read only while the head container runs: after `stop` the files describe the past."""
    sec = probe.section("vllm") if probe else None
    if sec is None or head is None:
        return None
    if not any(c.role == "head" and c.state == "running" for c in head.containers):
        return VllmProcess("absent")
    fields = dict(line.split(" ", 1) for line in sec.text.splitlines() if " " in line)
    last = redact(fields["last"].strip())[:300] if fields.get("last") else None
    code = fields.get("exit", "").strip()
    if code.lstrip("-").isdigit():
        return VllmProcess("exited", int(code), last)
    if fields.get("pid", "").strip():
        return VllmProcess("running", None, last)
    return VllmProcess("absent", None, last)


def persist_line(enabled: str, made_for: str | None, running: str | None) -> str:
    """One node's `serve.persist` state: its unit (systemctl is-enabled) and the config hash
    its boot plan was made for, against the config that runs."""
    if enabled != "enabled":
        return "off" if enabled in ("", "not-found", "disabled") else f"off ({enabled})"
    if made_for is None:
        return "installed (no boot plan)"
    if running is None:
        return f"installed (made for config {made_for}; nothing runs now)"
    if made_for == running:
        return "installed (matches running config)"
    return f"installed (stale: made for config {made_for})"


def persist_summary(lines: dict[str, str]) -> str:
    """The cluster's line: every node's when they agree, else the nodes that differ named."""
    kinds = set(lines.values())
    if not kinds:
        return "unknown (no node answered)"
    if len(kinds) == 1:
        return next(iter(kinds))
    if "off" in kinds:
        on = sorted(n for n, v in lines.items() if v != "off")
        return f"partly installed (only on {', '.join(on)}; `start --persist` completes it)"
    return "; ".join(f"{n}: {v}" for n, v in sorted(lines.items()))
