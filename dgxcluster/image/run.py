"""`dgxcluster build`: make every target node hold the image of the current build context.

1. probe: one round trip per node, all at once (does it hold `<image>:ctx-<hex>`?);
2. plan (`plan.py`): nothing to do where the tag is present: no file is sent, nothing built;
3. build: sync the context (changed files only) and `docker build` on each builder, output
   streamed live per node and kept in a per-node log;
4. distribute: `docker save` on the source streams node to node into `docker load` on every
   peer at once (`transfer.relay`), never through the operator's machine;
5. finalize: check the image ID (the same everywhere for `distribute`), move `current` to it
   and write the node's record (`records.py`), in one round trip per node.
Every node ends with its own outcome; one failing never stops the others.
"""

from __future__ import annotations

import secrets as pysecrets
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, cast

from dgxcluster.core.buildcontext import BuildContext, scan
from dgxcluster.core.imageid import ImageId
from dgxcluster.core.naming import LABEL_CONTENT_TAG, LABEL_IMAGE
from dgxcluster.core.nodepaths import NodePaths, build_subdir
from dgxcluster.core.progress import NullProgress, Progress
from dgxcluster.core.session import Session
from dgxcluster.core.steps import Status
from dgxcluster.errors import (
    CommandTimeout,
    ConnectError,
    DgxClusterError,
    HostKeyError,
    NodesFailed,
    UsageError,
)
from dgxcluster.image import dockercmd, probe, sync
from dgxcluster.image.plan import Action, BuildPlan, NodePlan, make_plan
from dgxcluster.image.records import ImageRecord, now
from dgxcluster.inventory.schema import ImageSettings
from dgxcluster.remote.connection import Connection
from dgxcluster.remote.result import GroupResult

STEP = "build"
TAIL_LINES = 30
PROBE_TIMEOUT_S = 60.0


@dataclass
class NodeReport:
    node: str
    status: Status
    detail: str
    action: str
    tail: list[str] = field(default_factory=list)
    image_id: str | None = None
    duration_s: float = 0.0
    log: Path | None = None


@dataclass
class BuildReport:
    image: str
    ref: str
    content_tag: str
    strategy: str
    dry_run: bool
    nodes: list[NodeReport]
    source: str | None = None
    notes: list[str] = field(default_factory=list)
    log_dir: Path | None = None

    def to_json(self) -> dict[str, object]:
        return {
            "image": self.image, "ref": self.ref, "content_tag": self.content_tag,
            "strategy": self.strategy, "dry_run": self.dry_run, "source": self.source,
            "notes": self.notes,
            "nodes": [{"node": n.node, "step": n.action, "status": n.status.value,
                       "detail": n.detail, "image_id": n.image_id, "tail": n.tail,
                       "duration_s": round(n.duration_s, 3),
                       "log": str(n.log) if n.log else None} for n in self.nodes],
        }

    @property
    def failed(self) -> list[NodeReport]:
        return [n for n in self.nodes if n.status is Status.FAILED]

    @property
    def unreachable(self) -> list[NodeReport]:
        return [n for n in self.nodes if n.status is Status.UNREACHABLE]


@dataclass
class _Work:
    """What one node's execution produced (filled in by the per-node functions)."""

    status: Status = Status.CHANGED
    detail: str = ""
    image_id: str | None = None
    tail: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)
    how: str = ""


def resolve_image(settings: ImageSettings, image: str | None) -> str:
    if image is None:
        return settings.name
    try:
        return ImageSettings(name=image).name
    except ValueError:
        raise UsageError(f"{image!r} is not a valid image name (lowercase repository, no tag)",
                         "--image") from None


def build(
    session: Session,
    *,
    nodes: Sequence[str] | None = None,
    image: str | None = None,
    strategy: str | None = None,
    no_cache: bool = False,
    dry_run: bool = False,
    progress: Progress | None = None,
) -> BuildReport:
    """Build (or ship) the inventory's image so every target node holds its content tag."""
    prog = progress or NullProgress()
    inv = session.inventory
    targets = session.cluster.select(nodes)
    name = resolve_image(inv.image, image)
    strat = strategy or inv.image.strategy
    if strat not in ("each", "distribute"):
        raise UsageError(f"unknown strategy {strat!r} (each | distribute)", "--strategy")
    builder = inv.image.build_node or inv.head_name
    probed = list(targets) + ([builder] if strat == "distribute" and builder not in targets else [])
    # Connecting (SSH handshakes) and hashing the context both take a few hundred ms: overlap.
    down: dict[str, BaseException] = {}
    warm = threading.Thread(target=_connect_all, args=(session, probed, down), daemon=True)
    warm.start()
    try:
        ctx = scan(inv.local_path(inv.image.context), inv.image.dockerfile, inv.image.build_args)
    finally:
        warm.join()
    img = ImageId(name, ctx.content_tag)
    ref, moving = img.ref, img.moving
    bdir = build_subdir(name)
    state_root = NodePaths.unresolved(inv.state_dir, inv.cluster).root
    for n in probed:
        prog.status(n, "checking")
    answers = session.cluster.run(probe.argv(ref, moving, state_root, bdir, force=no_cache),
                                  [n for n in probed if n not in down], timeout=PROBE_TIMEOUT_S)
    probes: dict[str, probe.Probe | BaseException] = {**down, **answers.errors}
    for node, res in answers.values.items():
        if res.ok:
            probes[node] = probe.parse(res.stdout, ref, moving)
        else:
            probes[node] = DgxClusterError(f"probe exited {res.exit_code}: {res.stderr.strip()}")
    keys = {n: e for n, e in probes.items() if isinstance(e, HostKeyError)}
    if keys:  # an unknown or changed host key is a security question, not a node down
        raise NodesFailed("build refused before changing anything: host key check", keys)
    plan = make_plan(ctx, image=name, ref=ref, moving=moving, strategy=strat, targets=targets,
                     builder=builder, probes=probes, no_cache=no_cache)
    for note in plan.notes:
        prog.message(note)
    report = BuildReport(name, ref, ctx.content_tag, strat, dry_run, [], plan.source, plan.notes,
                         session.logs.root if session.logs else None)
    if dry_run:
        order = {n: i for i, n in enumerate(inv.names)}
        report.nodes = [_planned(plan.nodes[n]) for n in sorted(plan.nodes, key=order.__getitem__)]
        for r in report.nodes:
            prog.status(r.node, r.detail)
        return report
    runner = _Runner(session, ctx, plan, prog, no_cache)
    report.nodes = runner.execute()
    return report


def _connect_all(session: Session, nodes: Sequence[str], down: dict[str, BaseException]) -> None:
    """Open the connections ahead of the first command; nodes that cannot be reached go
    into `down` (and are not tried a second time)."""

    def one(conn: Connection) -> None:
        connect = getattr(conn, "connect", None)
        if callable(connect):
            connect()

    down.update(session.cluster.map(one, nodes).unreachable)


def _planned(p: NodePlan) -> NodeReport:
    status = {Action.UP_TO_DATE: Status.UNCHANGED, Action.UNREACHABLE: Status.UNREACHABLE,
              Action.FAILED: Status.FAILED}.get(p.action, Status.CHANGED)
    detail = p.describe()
    if status is Status.CHANGED:
        detail = f"would {detail}"
    return NodeReport(p.node, status, detail, _STEP_NAMES[p.action])


class _Runner:
    """Executes a BuildPlan; every method that touches a node returns, never raises."""

    def __init__(self, session: Session, ctx: BuildContext, plan: BuildPlan, prog: Progress,
                 no_cache: bool) -> None:
        self.session = session
        self.inv = session.inventory
        self.ctx = ctx
        self.plan = plan
        self.prog = prog
        self.no_cache = no_cache
        self.work: dict[str, _Work] = {}

    # -- orchestration -------------------------------------------------------------------

    def execute(self) -> list[NodeReport]:
        plan = self.plan
        for node, p in plan.nodes.items():
            w = self.work[node] = _Work()
            if p.action is Action.UP_TO_DATE:
                w.status, w.detail = Status.UNCHANGED, "up to date"
                assert p.probe is not None and p.probe.want is not None
                w.image_id = p.probe.want.id
                self.prog.status(node, "up to date")
            elif p.action in (Action.UNREACHABLE, Action.FAILED):
                w.status = Status.UNREACHABLE if p.action is Action.UNREACHABLE else Status.FAILED
                w.detail = p.error or p.action.value
                self.prog.status(node, w.detail)
        if plan.strategy == "each":
            self._each()
        else:
            self._distribute()
        order = {n: i for i, n in enumerate(self.inv.names)}
        return [self._report(node) for node in sorted(plan.nodes, key=order.__getitem__)]

    def _each(self) -> None:
        todo = self.plan.with_action(Action.BUILD, Action.RETAG)
        self._settle(self.session.cluster.map(self._build_and_finalize, todo))

    def _settle(self, group: GroupResult[None]) -> None:
        """A per-node function that raised (a bug, or an error not foreseen) fails that node."""
        for node, err in group.errors.items():
            self._fail(node, str(err) or type(err).__name__,
                       unreachable=isinstance(err, ConnectError))

    def _build_and_finalize(self, conn: Connection) -> None:
        p = self.plan.nodes[conn.node]
        if p.action is Action.BUILD:
            if self._build(conn, p):
                self._finalize(conn, "built", expected=self.work[conn.node].image_id)
        else:
            assert p.probe is not None and p.probe.want is not None
            self._finalize(conn, "tagged", expected=p.probe.want.id)

    def _distribute(self) -> None:
        plan = self.plan
        source = plan.source
        receivers = plan.with_action(Action.RECEIVE)
        retag = plan.with_action(Action.RETAG)
        source_id: str | None = None
        if source is not None:
            sp = plan.nodes[source]
            if sp.action is Action.BUILD:
                ok = self._build(self.session.cluster.conn(source), sp)
                source_id = self.work[source].image_id if ok else None
            else:
                assert sp.probe is not None and sp.probe.want is not None
                source_id = sp.probe.want.id
        if receivers and source is not None:
            if source_id is None:
                for node in receivers:
                    self._fail(node, f"not received: the build on {source} failed")
            else:
                from dgxcluster.image.distribute import send_image

                paths = {n: self._paths(plan.nodes[n]) for n in [source, *receivers]}
                outcomes = send_image(self.session, source, plan.ref, receivers, paths=paths,
                                      timeout=self.inv.image.build_timeout_s, progress=self.prog)
                for node, d in outcomes.items():
                    if not d.ok:
                        self._fail(node, d.detail, unreachable=d.unreachable)
                    else:
                        self.work[node].detail = d.detail
        finals: dict[str, tuple[str, str | None]] = {}
        if source is not None and source_id is not None and plan.nodes[source].action is Action.BUILD:
            finals[source] = ("built", source_id)
        for node in receivers:
            if self.work[node].status is Status.CHANGED:
                finals[node] = ("received", source_id)
        for node in retag:
            p = plan.nodes[node]
            assert p.probe is not None and p.probe.want is not None
            finals[node] = ("tagged", p.probe.want.id)

        def fin(conn: Connection) -> None:
            how, expected = finals[conn.node]
            self._finalize(conn, how, expected=expected)

        self._settle(self.session.cluster.map(fin, list(finals)))

    # -- per node ------------------------------------------------------------------------

    def _paths(self, p: NodePlan) -> NodePaths:
        assert p.probe is not None
        return NodePaths(p.probe.home, self.inv.state_dir, self.inv.cluster)

    def _build(self, conn: Connection, p: NodePlan) -> bool:
        """Send the changed context files and run docker build; True if an image came out."""
        node = conn.node
        w = self.work[node]
        assert p.sync is not None and p.probe is not None
        paths = self._paths(p)
        build_dir = paths.build_dir(self.plan.image)
        ctx_dir = f"{build_dir}/context"
        tail: deque[str] = deque(maxlen=TAIL_LINES)
        log = self.session.logs.writer(node, STEP) if self.session.logs else None
        secret_dir = ""
        secret_files: dict[str, str] = {}
        stream: sync.ContextStream | None = None
        try:
            if self.session.secrets:
                secret_dir = f"{paths.env_dir}/build-{pysecrets.token_hex(6)}"
                for sname, value in self.session.secrets.items():
                    path = f"{secret_dir}/{sname}"
                    conn.put(value.reveal().encode(), path, mode=0o600)
                    secret_files[sname] = path
            docker_argv = dockercmd.build_argv(
                context_dir=ctx_dir, dockerfile=self.ctx.dockerfile,
                tags=[self.plan.ref, self.plan.moving],
                labels={LABEL_CONTENT_TAG: self.plan.content_tag, LABEL_IMAGE: self.plan.image},
                build_args=dict(self.ctx.build_args), secret_files=secret_files,
                no_cache=self.no_cache,
                cache_from=[] if self.no_cache or p.probe.current is None else [self.plan.moving])
            self.prog.status(node, f"sending context: {p.sync.describe()}")
            if log:
                log.line(f"# {self.plan.ref} on {node}: {p.sync.describe()}")
            stream = sync.ContextStream(self.ctx.root, p.sync)
            image_id: list[str] = []

            def on_line(_stream: str, raw: str) -> None:
                line = self.session.redactor(raw)
                if line.startswith(sync.IMAGE_ID_PREFIX):
                    image_id.append(line[len(sync.IMAGE_ID_PREFIX):].strip())
                    return
                if line == sync.READY_LINE:
                    self.prog.status(node, "building")
                    return
                if log:
                    log.line(line)
                if dockercmd.is_noise(line):
                    return
                tail.append(line)
                self.prog.line(node, line)
                step = dockercmd.step_of(line)
                if step:
                    self.prog.status(node, step)

            res = conn.run(sync.argv(build_dir, p.sync, secret_dir, self.plan.ref, docker_argv),
                           stdin=cast(BinaryIO, stream),
                           timeout=self.inv.image.build_timeout_s, on_line=on_line)
            if stream.error is not None:
                tail.append(f"dgxcluster: reading the local context failed: {stream.error}")
            if res.exit_code != 0 or not image_id or not image_id[0]:
                why = f"build failed (exit {res.exit_code})" if res.exit_code else "build left no image"
                return self._fail(node, why, tail=list(tail))
            w.image_id = image_id[0]
            w.detail = f"built in {time.monotonic() - w.started:.1f}s ({p.sync.describe()})"
            self.prog.status(node, "built; tagging")
            return True
        except ConnectError as exc:
            return self._fail(node, exc.reason, unreachable=True, tail=list(tail))
        except CommandTimeout as exc:
            return self._fail(node, str(exc), tail=list(tail))
        except (DgxClusterError, OSError) as exc:
            return self._fail(node, str(exc), tail=list(tail))
        finally:
            if stream is not None:
                stream.close()
            if log:
                log.close()

    def _finalize(self, conn: Connection, how: str, expected: str | None) -> None:
        node = conn.node
        w = self.work[node]
        p = self.plan.nodes[node]
        if expected is None:
            self._fail(node, "no image id to check")
            return
        paths = self._paths(p)
        rec = ImageRecord(self.plan.image, self.plan.content_tag, expected, self.plan.strategy,
                          how, self.plan.source or node, now())
        try:
            res = conn.run(dockercmd.finalize_argv(self.plan.ref, self.plan.moving, expected,
                                                   paths.records_dir, paths.image_record(self.plan.image)),
                           stdin=rec.to_json(), timeout=PROBE_TIMEOUT_S)
        except ConnectError as exc:
            self._fail(node, exc.reason, unreachable=True)
            return
        except DgxClusterError as exc:
            self._fail(node, str(exc))
            return
        if res.exit_code != 0:
            msg = res.stderr.strip().splitlines()[-1:] or [f"exit {res.exit_code}"]
            self._fail(node, msg[0], tail=res.stderr.strip().splitlines()[-TAIL_LINES:])
            return
        w.image_id = expected
        w.how = how
        if how == "tagged":
            w.detail = "image was here; moved `current` to it"
        elif not w.detail:
            w.detail = how
        self.prog.status(node, how)

    def _fail(self, node: str, detail: str, *, unreachable: bool = False,
              tail: list[str] | None = None) -> bool:
        w = self.work[node]
        w.status = Status.UNREACHABLE if unreachable else Status.FAILED
        w.detail = detail
        if tail:
            w.tail = tail[-TAIL_LINES:]
        self.prog.status(node, f"failed: {detail.splitlines()[0] if detail else ''}")
        return False

    def _report(self, node: str) -> NodeReport:
        w = self.work[node]
        p = self.plan.nodes[node]
        log = None
        if self.session.logs and p.action is Action.BUILD:
            log = self.session.logs.path(node, STEP)
        return NodeReport(node, w.status, w.detail, _STEP_NAMES[p.action], w.tail, w.image_id,
                          time.monotonic() - w.started, log if log and log.exists() else None)


_STEP_NAMES = {Action.UP_TO_DATE: "check", Action.UNREACHABLE: "check", Action.FAILED: "check",
               Action.BUILD: "build", Action.RECEIVE: "receive", Action.RETAG: "tag"}
