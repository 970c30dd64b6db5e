"""A native cluster's vLLM ranks for `status`: where each runs, alive or not, its last log line.

With `serve.executor: native` there is no Ray to ask: every node runs one rank of vLLM in its
own container, under `start`'s launcher, which leaves the rank's pid, exit status and log in
the node's log folder. Each node's status round reads them (the probe's `vllm` section); this
module turns them into one row per rank. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from dgxcluster.status.probe import NodeProbe
from dgxcluster.status.report import Healing, NodeStatus, healing


@dataclass
class RankStatus:
    node: str
    rank: int
    state: str  # running | exited | absent (no container) | unknown (the node did not answer)
    exit_code: int | None = None
    last_line: str | None = None
    replica: str | None = None  # the data-parallel replica(s) it runs ("1", "0-1")
    healing: Healing | None = None  # this node's own watcher (native: one per rank), if any ran

    @property
    def alive(self) -> bool:
        return self.state == "running"

    def describe(self) -> str:
        if self.state == "exited":
            return f"exited ({self.exit_code})" if self.exit_code is not None else "exited"
        return {"running": "alive", "absent": "no container"}.get(self.state, self.state)

    def to_json(self) -> dict[str, object]:
        return {**self.__dict__, "alive": self.alive,
                "healing": self.healing.to_json() if self.healing else None}


def rank_rows(ranks: Mapping[str, int], probes: Mapping[str, NodeProbe],
              nodes: list[NodeStatus], redact: Callable[[str], str],
              replicas: Mapping[str, str] | None = None) -> list[RankStatus]:
    """One row per rank, in rank order, each with its data-parallel replica(s) if any. The
    launcher's files are read only while the node holds a container of this cluster (after
    `stop` they describe the past); so is its watcher's state (`serve.restart`)."""
    rows = _rows(ranks, probes, nodes, redact)
    for r in rows:
        r.replica = (replicas or {}).get(r.node)
        if r.state not in ("unknown", "absent"):
            r.healing = healing(probes.get(r.node), redact)
    return rows


def _rows(ranks: Mapping[str, int], probes: Mapping[str, NodeProbe],
          nodes: list[NodeStatus], redact: Callable[[str], str]) -> list[RankStatus]:
    by_node = {n.node: n for n in nodes}
    rows = []
    for node, rank in sorted(ranks.items(), key=lambda kv: kv[1]):
        st, probe = by_node.get(node), probes.get(node)
        sec = probe.section("vllm") if probe else None
        if st is None or not st.reachable or st.docker is not True or sec is None:
            rows.append(RankStatus(node, rank, "unknown"))
            continue
        if not st.containers:
            rows.append(RankStatus(node, rank, "absent"))
            continue
        fields = dict(line.split(" ", 1) for line in sec.text.splitlines() if " " in line)
        last = redact(fields["last"].strip())[:300] if fields.get("last") else None
        code = fields.get("exit", "").strip()
        running = any(c.state == "running" for c in st.containers)
        if code.lstrip("-").isdigit():
            rows.append(RankStatus(node, rank, "exited", int(code), last))
        elif running and fields.get("pid", "").strip():
            rows.append(RankStatus(node, rank, "running", None, last))
        else:
            exited = next((c.exit_code for c in st.containers if c.state != "running"), None)
            rows.append(RankStatus(node, rank, "exited" if not running else "absent", exited, last))
    return rows
