"""`serve.persist` / `start --persist`: the cluster comes back by itself when its nodes boot.

Each node gets a systemd system unit, `dgxcluster-<cluster>.service` (`core.naming`), a
oneshot ordered after Docker and the network, enabled into multi-user.target, whose
`ExecStart=` runs the node-side `boot` program (`nodeside/boot.py`, shipped in the one
bundle, `core.ship`) on the node's boot plan (`NodePaths.boot_plan`). The plan is data made
here by the same functions `start` uses (the container names, vLLM's launcher and its
`clear_state`, the watcher's launch), so nothing of start's argv is written twice:

    native: headless ranks wait for rank 0's store (head fabric IP : serve.master_port; with
            replicas, the head's data-parallel front end; where a replica spans nodes, a
            follower waits for its replica leader's store), then `docker start` their rank;
            the head `docker start`s rank 0 at once.
    ray:    the head `docker start`s its Ray container, waits for the GCS port, then until
            `ray status` counts every node, then relaunches vLLM as `start` does; workers
            wait for the head's GCS port, then `docker start` theirs.
    and with `serve.restart: on-failure` the head's plan ends by starting the watcher.

The containers survive a reboot (not `--rm`), and `docker start` runs their main process
again with the same image, config and env-file. Why not Docker restart policies: they are
not ordered (a worker would race its head), not bounded, and vLLM inside the Ray head is
not that container's main process (docs/DEVELOPING.md).

The plan records the config hash it was made for, so `status` says whether what would come
back is what runs. Installing needs root: as root, else `sudo -n`; a node with neither
fails naming the fix. Persistence is not part of the config hash (`plan.PERSIST_KEYS`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from dgxcluster.core import docker, naming, ship
from dgxcluster.core.ranks import node_ranks
from dgxcluster.core.steps import Outcome, Status
from dgxcluster.errors import StepError
from dgxcluster.remote.command import shell
from dgxcluster.serving import dataparallel, plan, supervise
from dgxcluster.serving.preflight import split_sections
from dgxcluster.serving.vllm import clear_state_argv

if TYPE_CHECKING:
    from dgxcluster.core.nodepaths import NodePaths
    from dgxcluster.inventory.schema import InventoryModel
    from dgxcluster.remote.connection import Connection

STEP = "persist"
PYTHON = "/usr/bin/python3"
#: `ray status` lists one ` 1 node_<id>` line per live node (Active:, and Idle: in newer Ray)
RAY_NODE_LINE = r"^ *1 node_[0-9a-f]+\s*$"
#: time a `run` step may take (docker start, docker exec -d, the watcher's launch)
RUN_TIMEOUT_S = 120.0
FIX = ("connect as root (ssh.user) or give that user passwordless sudo for systemctl and "
       f"install into {naming.UNIT_DIR}, or start without --persist (serve.persist: false)")

# Who am I, may I, and what is installed now: one round trip.
# $1 unit file  $2 unit name  $3 plan file
_READ = (
    'if ! command -v systemctl >/dev/null 2>&1; then how=nosystemd; '
    'elif [ "$(id -u)" = 0 ]; then how=root; '
    'elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then how=sudo; '
    'else how=none; fi; '
    'echo @@who; echo "$(id -u) $(id -un) $how"; echo "@@rc 0"; '
    'echo @@unit; cat "$1" 2>/dev/null; echo "@@rc $?"; '
    'echo @@enabled; systemctl is-enabled "$2" 2>/dev/null; echo "@@rc $?"; '
    'echo @@plan; cat "$3" 2>/dev/null; echo "@@rc $?"'
)
_ROOT = 'if [ "$(id -u)" = 0 ]; then S=; else S="sudo -n"; fi; '
# $1 the unit's text, put in our tmp dir  $2 unit file  $3 unit name
_INSTALL = (_ROOT + '$S install -m 0644 "$1" "$2" && rm -f "$1" && $S systemctl daemon-reload '
            '&& $S systemctl enable "$3" 2>&1 && echo installed')
# $1 unit file  $2 unit name  $3 plan: "removed", "absent" or "no root"
_REMOVE = (
    'rm -f "$3"; if [ ! -e "$1" ]; then echo absent; exit 0; fi; '
    'if [ "$(id -u)" = 0 ]; then S=; elif command -v sudo >/dev/null 2>&1 && sudo -n true '
    '2>/dev/null; then S="sudo -n"; else echo "no root"; exit 0; fi; '
    '$S systemctl disable "$2" 2>&1; $S rm -f "$1" && $S systemctl daemon-reload && echo removed'
)


def _step(what: str, **kw: object) -> dict[str, object]:
    return {"what": what, **kw}


def _native_waits_for(inv: InventoryModel, node: str) -> tuple[str, int, str]:
    """What a native headless rank waits for at boot before it starts: its replica leader's
    store where a replica spans nodes (the head's front end, for a leader itself), else the
    head's data-parallel front end with replicas, else rank 0's store."""
    head_ip = str(inv.head_node.fabric_ip)
    front_end = (head_ip, inv.serve.data_parallel_rpc_port, "the head's data-parallel front end")
    leader = dataparallel.leader_of(inv, node)
    if leader == node:
        return front_end
    if leader is not None:
        return (str(inv.node(leader).fabric_ip), inv.serve.master_port,
                f"its replica leader {leader}'s store")
    if dataparallel.uses_master_port(inv):
        return head_ip, inv.serve.master_port, "rank 0's store"
    return front_end


def boot_plan(inv: InventoryModel, node: str, paths: NodePaths, config: str) -> dict[str, object]:
    """What `node` does at boot, in order (pure: JSON-able; no secrets, only file names)."""
    role = plan.role_of(inv, node)
    name = naming.container_name(inv.cluster, role)
    head_ip = str(inv.head_node.fabric_ip)
    steps: list[dict[str, object]] = []
    start = ["docker", "start", name]
    if inv.serve.executor == plan.NATIVE:
        if role == plan.WORKER:
            addr, port, what = _native_waits_for(inv, node)
            steps.append(_step(f"wait for {what} at {addr}:{port}", wait_tcp=[addr, port],
                               timeout_s=inv.serve.ready_timeout_s))
        steps.append(_step("forget the previous vLLM's pid and exit status",
                           run=clear_state_argv(paths)))
        steps.append(_step(f"start vLLM rank {node_ranks(inv)[node]} ({name})", run=start,
                           timeout_s=RUN_TIMEOUT_S))
    elif role == plan.HEAD:
        ray_t = inv.ray.start_timeout_s
        steps += [
            _step(f"start the Ray head ({name})", run=start, timeout_s=RUN_TIMEOUT_S),
            _step(f"wait for Ray's GCS at {head_ip}:{inv.ray.port}",
                  wait_tcp=[head_ip, inv.ray.port], timeout_s=ray_t),
            _step(f"wait until `ray status` counts {len(inv.names)} nodes",
                  wait_run=["docker", "exec", name, "ray", "status"], until_regex=RAY_NODE_LINE,
                  count=len(inv.names), timeout_s=ray_t),
            _step("forget the previous vLLM's pid and exit status", run=clear_state_argv(paths)),
            _step(f"launch `vllm serve {plan.require_model(inv)}` in {name}",
                  run=plan.serve_exec(inv), timeout_s=RUN_TIMEOUT_S),
        ]
    else:
        steps += [
            _step(f"wait for the Ray head's GCS at {head_ip}:{inv.ray.port}",
                  wait_tcp=[head_ip, inv.ray.port], timeout_s=inv.ray.start_timeout_s),
            _step(f"start the Ray worker ({name})", run=start, timeout_s=RUN_TIMEOUT_S),
        ]
    if inv.serve.restart == "on-failure" and node in supervise.watcher_nodes(inv):
        steps.append(_step("start the watcher (serve.restart: on-failure)",
                           run=supervise.launch_argv(paths, ship.path(paths)),
                           timeout_s=RUN_TIMEOUT_S))
    return {"v": 1, "cluster": inv.cluster, "node": node, "role": role,
            "executor": inv.serve.executor, "config": config, "log": paths.boot_log,
            "steps": steps}


def render_plan(doc: Mapping[str, object]) -> bytes:
    return (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode()


def timeout_s(doc: Mapping[str, object]) -> int:
    """The unit's TimeoutStartSec: every step's own bound, plus a margin."""
    steps = doc.get("steps")
    total = sum(float(s.get("timeout_s", RUN_TIMEOUT_S)) for s in steps
                if isinstance(s, dict)) if isinstance(steps, list) else 0.0
    return int(total) + 120


def _systemd_quote(arg: str, *, executable: bool = False) -> str:
    """One ExecStart= word (systemd.service(5) "Command lines": quotes and `%` specifiers are
    expanded everywhere, `$` variables only in the arguments, so `$` is doubled only there:
    systemd-analyze verify (systemd 252) looks for an executable named `a$$b` literally)."""
    text = arg.replace("%", "%%")
    if not executable:
        text = text.replace("$", "$$")
    if text and all(c.isalnum() or c in "/._-+:=@," for c in text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def exec_start(paths: NodePaths) -> list[str]:
    return [PYTHON, ship.path(paths), "boot", paths.boot_plan]


def exec_line(argv: list[str]) -> str:
    """argv as one ExecStart= value."""
    return " ".join(_systemd_quote(a, executable=i == 0) for i, a in enumerate(argv))


def unit_text(inv: InventoryModel, node: str, paths: NodePaths, doc: Mapping[str, object],
              user: str | None = None) -> str:
    """The node's systemd unit (`User=` the SSH user when it is not root)."""
    lines = [
        f"# Written by dgxcluster (start --persist) for cluster {inv.cluster}, node {node}.",
        "# `dgxcluster stop` removes it. Runs this node's boot plan once per boot.",
        "[Unit]",
        f"Description=dgxcluster {inv.cluster}: {node}'s part, back after a reboot",
        "Requires=docker.service",
        "Wants=network-online.target",
        "After=docker.service network-online.target",
        "",
        "[Service]",
        "Type=oneshot",
        "RemainAfterExit=yes",
        *([f"User={user}"] if user else []),
        "ExecStart=" + exec_line(exec_start(paths)),
        f"TimeoutStartSec={timeout_s(doc)}",
        "",
        "[Install]",
        "WantedBy=multi-user.target",
    ]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Installed:
    """What the node holds now."""

    uid: str
    user: str
    how: str  # root | sudo | none | nosystemd
    unit: str | None
    enabled: str  # systemctl is-enabled's word, or "" when it printed none
    plan: str | None

    @property
    def config(self) -> str | None:
        """The config hash the installed plan was made for."""
        try:
            doc = json.loads(self.plan or "")
        except ValueError:
            return None
        return str(doc.get("config")) if isinstance(doc, dict) and doc.get("config") else None


def parse_read(text: str) -> Installed:
    sec = split_sections(text)
    who = sec.get("who", ("", -1))[0].split()
    unit, unit_rc = sec.get("unit", ("", 1))
    enabled = sec.get("enabled", ("", 1))[0].strip()
    plan_text, plan_rc = sec.get("plan", ("", 1))
    return Installed(who[0] if who else "?", who[1] if len(who) > 1 else "?",
                     who[2] if len(who) > 2 else "none",
                     unit + "\n" if unit_rc == 0 else None,
                     enabled.splitlines()[-1] if enabled else "",
                     plan_text + "\n" if plan_rc == 0 else None)


def read(conn: Connection, inv: InventoryModel, paths: NodePaths) -> Installed:
    res = conn.run(shell(_READ, naming.unit_path(inv.cluster), naming.unit_name(inv.cluster),
                         paths.boot_plan), timeout=docker.QUICK_S)
    return parse_read(res.stdout)


def wanted(inv: InventoryModel, node: str, paths: NodePaths, config: str,
           user: str | None = None) -> tuple[str, bytes]:
    doc = boot_plan(inv, node, paths, config)
    return unit_text(inv, node, paths, doc, user), render_plan(doc)


def problem(inv: InventoryModel, now: Installed) -> str | None:
    """Why this node cannot take the unit (no systemd, no root), or None."""
    if now.how == "nosystemd":
        return ("--persist needs systemd, and this node has no systemctl; start without "
                "--persist (serve.persist: false)")
    if now.how == "none":
        return (f"--persist installs {naming.unit_path(inv.cluster)} as root, and the SSH user "
                f"{now.user} is not root and has no passwordless sudo; fix: {FIX}")
    return None


def precheck(conn: Connection, inv: InventoryModel, paths: NodePaths) -> str | None:
    """For preflight: can `ensure` work on this node? (before anything is started)"""
    return problem(inv, read(conn, inv, paths))


def ensure(conn: Connection, inv: InventoryModel, paths: NodePaths, config: str) -> Outcome:
    """The node's unit and boot plan as this config wants them, enabled (unchanged when so)."""
    name = naming.unit_name(inv.cluster)
    now = read(conn, inv, paths)
    unit, data = wanted(inv, conn.node, paths, config, None if now.uid == "0" else now.user)
    if now.unit == unit and now.enabled == "enabled" and (now.plan or "").encode() == data:
        return Outcome(conn.node, STEP, Status.UNCHANGED, f"{name} enabled (config {config})")
    why = problem(inv, now)
    if why:
        raise StepError(STEP, why, conn.node)
    ship.ensure(conn, paths)
    conn.put(data, paths.boot_plan, 0o600, timeout=docker.QUICK_S)
    tmp = paths.tmp_file(f"{name}.{config}")
    conn.run(["mkdir", "-p", paths.tmp_dir], timeout=docker.QUICK_S).check()
    conn.put(unit.encode(), tmp, 0o644, timeout=docker.QUICK_S)
    res = conn.run(shell(_INSTALL, tmp, naming.unit_path(inv.cluster), name), timeout=docker.QUICK_S * 2)
    if not res.ok or "installed" not in res.stdout:
        conn.run(["rm", "-f", tmp, paths.boot_plan], timeout=docker.QUICK_S)
        said = (res.stdout + res.stderr).strip().splitlines()
        raise StepError(STEP, f"could not install {naming.unit_path(inv.cluster)}: "
                        f"{said[-1] if said else f'exit {res.exit_code}'}; fix: {FIX}", conn.node)
    return Outcome(conn.node, STEP, Status.CHANGED,
                   f"installed and enabled {name} ({paths.boot_plan}, config {config})")


def remove(conn: Connection, inv: InventoryModel, paths: NodePaths) -> Outcome:
    """No unit, no plan on the node (unchanged when there were none)."""
    name = naming.unit_name(inv.cluster)
    res = conn.run(shell(_REMOVE, naming.unit_path(inv.cluster), name, paths.boot_plan),
                   timeout=docker.QUICK_S * 2)
    last = res.stdout.strip().splitlines()[-1] if res.stdout.strip() else ""
    if last == "absent":
        return Outcome(conn.node, STEP, Status.UNCHANGED, "off (no unit installed)")
    if last == "removed":
        return Outcome(conn.node, STEP, Status.CHANGED, f"disabled and removed {name}")
    why = "no root or passwordless sudo" if last == "no root" else (
        (res.stderr or res.stdout).strip() or f"exit {res.exit_code}")
    raise StepError(STEP, f"could not remove {naming.unit_path(inv.cluster)}: {why}; fix: {FIX}",
                    conn.node)


def dry_run_lines(inv: InventoryModel, node: str, paths: NodePaths, config: str) -> list[str]:
    """What `start --persist --dry-run` shows for one node: the unit and the plan."""
    unit, data = wanted(inv, node, paths, config)
    return [f"write {naming.unit_path(inv.cluster)} (User= the SSH user when not root), then "
            f"`systemctl daemon-reload`, `systemctl enable {naming.unit_name(inv.cluster)}`:",
            *("    " + ln for ln in unit.splitlines()),
            f"write {paths.boot_plan} (mode 0600):",
            *("    " + ln for ln in data.decode().splitlines())]

