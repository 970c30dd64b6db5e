"""`start`: named stages, each reported per node, compare-then-act, rolled back on failure.

    lock -> preflight -> (the executor's stages) -> vllm-ready -> supervise -> persist
    ray:    ray-head -> ray-workers -> ray-ready -> vllm -> vllm-ready
    native: headless -> rank0 -> vllm-ready

`stages(executor)` declares them; `core.stages` walks them (naming the stage in any failure
and calling the rollback once). The executor (`serving/executors/`) says what to create and
brings its part up; preflight, env-files, containers, the wait for vLLM and the rollback are
shared here.

Every stage first compares what runs with what the inventory asks for (the config hash in
the `dgxcluster.config` label), so a second start of a healthy cluster changes nothing.
A failure (or Ctrl-C) removes what this run created, on every node, and names the stage.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from dgxcluster.core import docker, endpoint, imageid, naming
from dgxcluster.core.endpointroute import SSH, EndpointRoute
from dgxcluster.core.nodepaths import NodePaths
from dgxcluster.core.progress import NullProgress, Progress
from dgxcluster.core.session import Session
from dgxcluster.core.stages import DONE, Ledger, Next, Stage, walk
from dgxcluster.core.steps import Outcome, Status, outcomes_from
from dgxcluster.errors import (
    ConnectError,
    DgxClusterError,
    LockHeld,
    NodesFailed,
    StepError,
    UsageError,
)
from dgxcluster.facts.docker_ps import ContainerInfo
from dgxcluster.inventory import placement
from dgxcluster.remote.command import for_display
from dgxcluster.remote.connection import Connection
from dgxcluster.remote.result import GroupResult
from dgxcluster.secrets import render_env_file
from dgxcluster.serving import dropcaches, executors, persist, plan, supervise, vllm
from dgxcluster.serving.executors import Executor
from dgxcluster.serving.lock import ClusterLock
from dgxcluster.serving.preflight import (
    NodeCheck,
    NodeFacts,
    describe,
    foreign_containers,
    gather,
)
from dgxcluster.serving.teardown import Created, Found, rollback, teardown


@dataclass
class StartOptions:
    dry_run: bool = False
    restart: bool = False
    keep_on_failure: bool = False
    ready_timeout_s: float | None = None
    skip_model_check: bool = False
    #: free each node's page cache before its memory is read (root or sudo; `dropcaches`)
    drop_caches: bool = False
    #: is serve.model complete on every node? (`models.check.start_check`, from the CLI)
    model_check: NodeCheck | None = None
    #: can the nodes run the pulled image? (`image.startcheck.start_check`, from the CLI)
    image_check: NodeCheck | None = None


@dataclass
class StartReport:
    endpoint: str
    model: str
    curl: str
    image: str
    config: str
    outcomes: list[Outcome] = field(default_factory=list)
    already_running: bool = False
    dry_run: list[tuple[str, list[str]]] = field(default_factory=list)
    ready_after_s: float | None = None
    elapsed_s: float = 0.0


class StartFailed(NodesFailed):
    """A stage failed; carries the stage, each node's error and what the rollback did."""

    def __init__(self, step: str, errors: dict[str, BaseException], rollback_lines: list[str],
                 kept: bool, outcomes: list[Outcome]) -> None:
        super().__init__(f"start: step '{step}'", errors)
        self.step = step
        self.rollback = rollback_lines
        self.outcomes = outcomes
        lines = [f"start failed at step '{step}':"]
        for node, err in self.errors.items():
            body = str(err)
            lines += ["  " + ln for ln in (body if body.startswith(node) else f"{node}: {body}").splitlines()]
        if kept:
            lines.append("left in place for inspection (--keep-on-failure); "
                         "`dgxcluster stop` removes it")
        elif rollback_lines:
            lines.append("rolled back what this start created:")
            lines += ["  " + ln for ln in rollback_lines]
        else:
            lines.append("nothing was changed")
        self.args = ("\n".join(lines),)


def start(session: Session, options: StartOptions | None = None,
          progress: Progress | None = None) -> StartReport:
    opts = options or StartOptions()
    prog = progress or NullProgress()
    inv = session.inventory
    t0 = time.monotonic()
    plan.require_model(inv)
    too_big = inv.parallel_problem()  # also with defaults (TP 2 on one node): caught at load
    if too_big:                       # when set explicitly
        raise UsageError(too_big, "serve.tensor_parallel_size")
    key = endpoint.api_key(inv, session.secrets)  # named but unset: exit 2, nothing touched
    serving = placement.serving(inv)
    if len(serving) < len(inv.names):  # serve.nodes leaves nodes idle: Ray must not count them
        narrowed = session.only(serving)
        try:
            return start(narrowed, options, progress)
        finally:
            narrowed.close()
    image = imageid.expected(inv).ref
    config = plan.config_hash(inv, image)
    report = StartReport(endpoint=endpoint.api_url(inv), model=plan.model_id(inv),
                         curl=endpoint.curl_example(inv, plan.model_id(inv)), image=image,
                         config=config)
    if opts.dry_run:
        report.dry_run = _dry_run(session, image, config)
        return report
    lock = ClusterLock(session.cluster.conn(inv.head_name), inv.state_dir, inv.cluster, "start")
    route = EndpointRoute(inv, key, lambda: session.cluster.conn(inv.head_name))
    try:
        StartRun(session, opts, prog, report, lock, route.get).run()
    finally:
        lock.release()
    if route.via == SSH:
        prog.message(f"vLLM was checked{route.describe()}: {report.endpoint} does not answer "
                     "from this machine (serve.endpoint_via)")
    report.elapsed_s = time.monotonic() - t0
    return report


def _dry_run(session: Session, image: str, config: str) -> list[tuple[str, list[str]]]:
    """Every node's commands, secrets masked; reads $HOME on each node and changes nothing."""
    inv = session.inventory
    group = session.cluster.map(lambda c: NodePaths.resolve(c, inv.state_dir, inv.cluster))
    group.raise_for_failures("dry-run (reading $HOME)")
    out: list[tuple[str, list[str]]] = []
    for node in inv.names:
        cmds = plan.node_commands(inv, node, group.values[node], image, config, session.secrets)
        env_lines = [f"    {k}=******" for k in cmds.env_values] or ["    (no secrets)"]
        lines = [for_display(cmds.prepare),
                 f"write {cmds.env_file} (mode 0600, over SFTP):", *env_lines,
                 for_display(cmds.docker_run)]
        if cmds.role == plan.HEAD and inv.serve.executor == plan.RAY:
            lines.append(for_display(plan.serve_exec(inv)))
        ports = plan.node_ports(inv, node)
        if ports:  # what preflight checks free before the node's container
            lines.insert(0, "# ports that must be free here: " + ", ".join(
                f"{port} ({whose})" for port, whose in ports.items()))
        if inv.serve.persist:
            lines += persist.dry_run_lines(inv, node, group.values[node], config)
        out.append((f"{node} ({cmds.role})", [session.redactor(ln) for ln in lines]))
    return out


class StartRun:
    """One locked start: the shared stages, what they created, and the rollback. The
    executor's stages run on it too (they call `create`, `out`, `wait_ready`)."""

    def __init__(self, session: Session, opts: StartOptions, progress: Progress,
                 report: StartReport, lock: ClusterLock, get: endpoint.Getter) -> None:
        self.lock = lock
        self.get = get
        self.s = session
        self.inv = session.inventory
        self.opts = opts
        self.p = progress
        self.report = report
        self.created = Created()
        self.ledger = Ledger(self.inv.names, progress)
        self.facts: dict[str, NodeFacts] = {}
        self.executor: Executor = executors.for_inventory(self.inv)
        #: set when the run fails or is interrupted: background waits stop
        self.cancel = threading.Event()
        #: executors add what a failure must do first (finish a pending outcome, ...)
        self.on_failure: list[Callable[[], None]] = []

    @property
    def head(self) -> str:
        return self.inv.head_name

    @property
    def step(self) -> str:
        """The stage now running (a stage may name a part of itself: restart, vllm-ready)."""
        return self.ledger.stage

    @step.setter
    def step(self, name: str) -> None:
        self.ledger.stage = name

    def out(self, node: str, step: str, status: Status, detail: str = "") -> None:
        self.report.outcomes.append(Outcome(node, step, status, detail))

    def run(self) -> None:
        # any failure, Ctrl-C included, rolls back first (_fail raises what the CLI shows)
        walk(stages(self.executor), self, self.ledger, rollback=self._fail)

    def _fail(self, exc: BaseException) -> None:
        self.cancel.set()
        if isinstance(exc, LockHeld):
            raise exc  # nothing was read or changed: the holder's name is the whole message
        kept = self.opts.keep_on_failure and bool(self.created.nodes)
        lines: list[str] = []
        for first in self.on_failure:
            first()
        if not kept and self.created.nodes:
            what = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
            self.p.message(f"start {what} at step '{self.step}': rolling back")
            lines = rollback(self.s, self.created, self.p)
        if not isinstance(exc, DgxClusterError):
            for ln in lines:
                self.p.message(f"rolled back {ln}")
            raise exc
        errors: dict[str, BaseException]
        if isinstance(exc, NodesFailed):
            errors = dict(exc.errors)
        else:
            node = getattr(exc, "node", None) or self.head
            errors = {node: exc}
        seen = {(o.node, o.step) for o in self.report.outcomes}
        for node, err in errors.items():
            if (node, self.step) not in seen:
                status = Status.UNREACHABLE if isinstance(err, ConnectError) else Status.FAILED
                self.out(node, self.step, status, str(err).splitlines()[0])
        raise StartFailed(self.step, errors, lines, kept, self.report.outcomes) from exc

    def preflight(self) -> Next | None:
        """Lock, read every node, compare with what runs; DONE if it already runs, healthy."""
        self._preflight()
        self._refuse_or_restart()
        new = self.executor.decide(self)
        if not new and self.ready_now():
            self.report.already_running = True
            for node in self.inv.names:
                self.out(node, "start", Status.UNCHANGED,
                         f"already running (config {self.report.config})")
            self.supervise()
            self.persist()
            return DONE
        # something will be started: the watcher must not act meanwhile (started again last)
        paused = self.s.cluster.map(lambda c: supervise.stop(c, self.facts[c.node].paths),
                                    supervise.watcher_nodes(self.inv))
        paused.raise_for_failures(supervise.STEP)
        for node in supervise.watcher_nodes(self.inv):
            if paused.values.get(node) == "stopped":
                self.out(node, supervise.STEP, Status.CHANGED, "watcher paused while start acts")
        for n in self.inv.names:
            if n not in new:
                self.out(n, "env-files", Status.UNCHANGED, "container already running")
        return None

    # -- preflight -------------------------------------------------------------------

    def _preflight(self) -> None:
        """The lock is taken on the head while the other nodes are already being read."""
        self.step = "preflight"

        def one(conn: Connection) -> NodeFacts:
            if conn.node == self.head:
                self.p.status(conn.node, "lock: taking the cluster lock")
                self.lock.acquire()
                self.out(conn.node, "lock", Status.CHANGED, f"holding {self.lock.shown}")
            if self.opts.drop_caches:
                self.p.status(conn.node, "preflight: dropping the page cache")
                self.out(conn.node, dropcaches.STEP, *dropcaches.drop(conn))
            self.p.status(conn.node, "preflight")
            facts = gather(conn, self.inv, self.report.image)
            self._persist_check(conn, facts)
            check = self._model_check()
            if check is not None:
                self.p.status(conn.node, f"preflight: looking for {check.label}")
                entries[conn.node] = check.read(conn, facts.paths)
            if self.opts.image_check is not None and facts.image_ok:
                image_entries[conn.node] = self.opts.image_check.read(conn, facts.paths)
            return facts

        entries: dict[str, object] = {}
        image_entries: dict[str, object] = {}
        group = self.s.cluster.map(one)
        self._check_model(group.values, entries)
        self._check_image(group.values, image_entries)
        head_err = group.errors.get(self.head)
        if isinstance(head_err, LockHeld) or (isinstance(head_err, StepError) and head_err.step == "lock"):
            raise head_err
        for node in group:
            f = group.values.get(node)
            if f is None:
                self.report.outcomes += outcomes_from("preflight", GroupResult(
                    errors={node: group.errors[node]}, order=[node]))
            else:
                self.out(node, "preflight", Status.FAILED if f.problems else Status.UNCHANGED,
                         "; ".join(f.problems) or describe(f, self.inv))
        errors: dict[str, BaseException] = dict(group.errors)
        for node, f in group.values.items():
            if f.problems:
                errors[node] = StepError("preflight", "; ".join(f.problems), node)
        if errors:
            raise NodesFailed("preflight", errors)
        self.facts = dict(group.values)

    def _persist_check(self, conn: Connection, facts: NodeFacts) -> None:
        """`--persist` refused before anything starts (no systemd, no root), not after."""
        if self.inv.serve.persist:
            why = persist.precheck(conn, self.inv, facts.paths)
            if why:
                facts.problems.append(why)

    def _model_check(self) -> NodeCheck | None:
        check = self.opts.model_check
        if self.opts.skip_model_check or check is None or check.skip_reason:
            return None
        return check

    def _check_model(self, facts: dict[str, NodeFacts], entries: dict[str, object]) -> None:
        """Every node must hold the served revision complete (each node's vLLM reads its own
        cache); a node lacking it becomes a preflight problem naming the fix."""
        check = self._model_check()
        if check is None:
            why = ("--skip-model-check" if self.opts.skip_model_check else
                   self.opts.model_check.skip_reason if self.opts.model_check else "none given")
            for f in facts.values():
                f.model = f"model check off ({why})"
            return
        judged = check.judge({n: e for n, e in entries.items() if n in facts})
        for node, f in facts.items():
            fine, text = judged[node]
            if fine:
                f.model = text
            else:
                f.problems.append(text)

    def _check_image(self, facts: dict[str, NodeFacts], entries: dict[str, object]) -> None:
        """A pulled image: the same image ID everywhere, and Ray in it (`image.startcheck`)."""
        if self.opts.image_check is None:
            return
        for node, (fine, text) in self.opts.image_check.judge(entries).items():
            if not fine and node in facts:
                facts[node].problems.append(text)

    def mine(self, node: str) -> ContainerInfo | None:
        """This node's container of this cluster, as preflight found it."""
        f = self.facts[node]
        return f.container(naming.container_name(self.inv.cluster, f.role))

    def same(self, node: str) -> bool:
        """The node's container runs, with this start's configuration."""
        c = self.mine(node)
        return c is not None and c.running and \
            c.labels.get(naming.LABEL_CONFIG) == self.report.config

    def _refuse_or_restart(self) -> None:
        """A different configuration running is refused, or stopped first with --restart.

        Only a cluster whose head container runs is protected so: without it nothing
        serves, and another node's container of another configuration is what a start that
        could not finish (or roll back) left there, which this start replaces, saying so."""
        config = self.report.config
        head = self.mine(self.head)
        serving = head is not None and head.running
        different: list[str] = []
        leftovers: list[str] = []
        for node, f in self.facts.items():
            mine = self.mine(node)
            if mine and mine.running and mine.labels.get(naming.LABEL_CONFIG) != config:
                (different if serving else leftovers).append(
                    f"{node}: {mine.name} runs config {mine.labels.get(naming.LABEL_CONFIG, '?')}")
            different += [f"{node}: {c.name} ({c.state})" for c in foreign_containers(f, self.inv)
                          if c.running]
        if different and not self.opts.restart:
            raise StepError("preflight", f"a different configuration is running (this one is "
                            f"{config}):\n  " + "\n  ".join(different) +
                            "\nuse `dgxcluster start --restart` to replace it, or `dgxcluster stop`")
        if different:
            self._restart()
        elif leftovers:
            self._restart(f"no head container runs: replacing what an earlier start left "
                          f"({'; '.join(leftovers)})")

    def require_free_ports(self) -> None:
        """Before new containers: the ports each binds must be free on its node (the head's;
        a spanning replica leader's --master-port). A node whose own container of this
        cluster runs holds them itself and gives them up when that container is replaced."""
        for node, f in self.facts.items():
            mine = self.mine(node)
            if not f.busy_ports or (node != self.head and mine is not None and mine.running):
                continue
            needs = plan.node_ports(self.inv, node)
            busy = sorted(f.busy_ports)
            raise StepError("preflight", f"port(s) {', '.join(map(str, busy))} already in use ("
                            + ", ".join(f"{p} is {needs[p]}" for p in busy) + ")", node)

    def _restart(self, why: str = "--restart: stopping the running cluster first") -> None:
        self.step = "restart"
        self.p.message(why)
        found = {n: Found(n, f.paths, list(f.containers)) for n, f in self.facts.items() if f.containers}
        for o in teardown(self.s, found, self.p):
            self.report.outcomes.append(Outcome(o.node, f"restart:{o.step}", o.status, o.detail))
            if o.status in (Status.FAILED, Status.UNREACHABLE):
                raise StepError("restart", f"could not stop the running cluster: {o.detail}", o.node)
        for f in self.facts.values():
            f.containers = []
            f.busy_ports = set()

    def ready_now(self) -> bool:
        return vllm.ready(self.inv, self.get).ready

    # -- env-files, containers ---------------------------------------------------------

    def _env_file(self, conn: Connection, step: str) -> None:
        """The node's 0600 env-file (its secrets), written just before its container starts."""
        values = plan.env_file_values(self.s.secrets, self.inv, plan.role_of(self.inv, conn.node))
        data = render_env_file(values) if values else b"# no secrets\n"
        paths = self.facts[conn.node].paths
        path = paths.env_file(plan.role_of(self.inv, conn.node))
        self.p.status(conn.node, f"{step}: env-file")
        res = conn.run(plan.prepare_dirs(self.inv, paths, plan.runs_vllm(self.inv, conn.node)),
                       timeout=docker.QUICK_S)
        if not res.ok:
            raise StepError(step, f"could not create {paths.root}: {res.stderr.strip()}",
                            conn.node)
        conn.put(data, path, 0o600, timeout=docker.QUICK_S)
        self.created.env_files[conn.node] = path
        self.out(conn.node, "env-files", Status.CHANGED, f"wrote {path} (0600, {len(values)} secret(s))")

    def create(self, conn: Connection, step: str) -> Outcome:
        """Env-file, then the node's container (replacing a stopped one of this cluster)."""
        f = self.facts[conn.node]
        name = naming.container_name(self.inv.cluster, f.role)
        self._env_file(conn, step)
        replaced = ""
        leftovers = [c for c in f.containers if c.name == name] + foreign_containers(f, self.inv)
        for c in leftovers:
            docker.remove(conn, c.name)
            replaced = f" (replaced a {'running' if c.running else 'stopped'} one)"
        self.p.status(conn.node, f"{step}: docker run {name}")
        self.created.containers[conn.node] = name
        argv = plan.docker_run(self.inv, conn.node, f.paths, self.report.image, self.report.config)
        res = conn.run(argv, timeout=120)
        if not res.ok:
            raise StepError(step, f"docker run failed: {(res.stderr or res.stdout).strip()}", conn.node)
        return Outcome(conn.node, step, Status.CHANGED, f"started {name}{replaced}")

    def create_on(self, nodes: list[str], step: str) -> None:
        """`create` on `nodes` in parallel; every node's outcome, then the failures raised."""
        group = self.s.cluster.map(lambda c: self.create(c, step), nodes)
        self.report.outcomes += outcomes_from(step, group)
        group.raise_for_failures(step)

    # -- vLLM answering ------------------------------------------------------------------

    def wait_ready(self, gate: Callable[[], bool] | None = None,
                   explain: Callable[[StepError], BaseException] | None = None) -> None:
        """vLLM on the head answers (/health, then /v1/models listing the model)."""
        self.step = "vllm-ready"
        conn = self.s.cluster.conn(self.head)
        timeout = self.opts.ready_timeout_s or self.inv.serve.ready_timeout_s
        try:
            took = vllm.wait_ready(conn, self.inv, self.facts[self.head].paths, timeout, self.p,
                                   self.get, gate=gate)
        except StepError as err:
            if explain is None:
                raise
            raise explain(err) from None
        self.report.ready_after_s = took
        self.out(self.head, "vllm-ready", Status.CHANGED,
                 f"{plan.model_id(self.inv)} ready at {self.report.endpoint} after {took:.1f}s")

    def supervise(self) -> None:
        """The watchers (`serve.restart`: the head's; native, every serving node's), last:
        they watch a ready endpoint."""
        self.step = supervise.STEP
        group = self.s.cluster.map(
            lambda c: supervise.ensure(c, self.inv, self.facts[c.node].paths, self.report.config),
            supervise.watcher_nodes(self.inv))
        self.report.outcomes += outcomes_from(supervise.STEP, group)
        group.raise_for_failures(supervise.STEP)


    def persist(self) -> None:
        """Every node's unit and boot plan (`serve.persist`), or none; last: they bring back
        what runs now. A node that fails has the others' removed again (nothing half-done)."""
        self.step = persist.STEP
        config = self.report.config

        def one(conn: Connection) -> Outcome:
            paths = self.facts[conn.node].paths
            if self.inv.serve.persist:
                self.p.status(conn.node, f"persist: installing {naming.unit_name(self.inv.cluster)}")
                return persist.ensure(conn, self.inv, paths, config)
            return persist.remove(conn, self.inv, paths)

        nodes = self.inv.names if self.inv.serve.persist else \
            [n for n in self.inv.names if self.facts[n].unit]  # off: remove what is there
        group = self.s.cluster.map(one, nodes)
        if group.errors and self.inv.serve.persist:
            done = [n for n, o in group.values.items() if o.status is Status.CHANGED]
            undo = self.s.cluster.map(
                lambda c: persist.remove(c, self.inv, self.facts[c.node].paths), done)
            for node in undo.values:
                group.values[node] = Outcome(node, persist.STEP, Status.CHANGED,
                                             "removed again (another node failed)")
        self.report.outcomes += outcomes_from(persist.STEP, group)
        for n in self.inv.names:
            if n not in nodes:
                self.out(n, persist.STEP, Status.UNCHANGED, "off (no unit installed)")
        group.raise_for_failures(persist.STEP)


def stages(executor: Executor) -> tuple[Stage[StartRun], ...]:
    """preflight (shared), then the executor's own, ending with vLLM answering, then the
    head's watcher (`serve.restart`), then each node's boot unit (`serve.persist`)."""
    return (Stage("preflight", StartRun.preflight), *executor.stages(),
            Stage("supervise", StartRun.supervise), Stage("persist", StartRun.persist))
