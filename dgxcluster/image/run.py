"""`dgxcluster build`: make every target node hold the image of the current build context.

Declared as stage lists (`EACH`, `DISTRIBUTE`) walked by `core.stages`:
1. check: probe: one round trip per node, all at once (does it hold `<image>:ctx-<hex>`?);
2. plan (`plan.py`): nothing to do where the tag is present: no file is sent, nothing built;
3. build: sync the context (changed files only) and `docker build` on each builder, output
   streamed live per node and kept in a per-node log;
4. distribute: `docker save` on the source streams node to node into `docker load` on every
   peer at once (`core.relay`), never through the operator's machine;
5. tag (finalize): check the image ID (the same everywhere for `distribute`), move `current` to it
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
from dgxcluster.core.stages import DONE, Ledger, Next, Stage, walk
from dgxcluster.core.steps import Outcome, Status
from dgxcluster.errors import (
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
from dgxcluster.remote.connection import Connection, LineCallback
from dgxcluster.remote.result import GroupResult
from dgxcluster.runlog import NodeStepLog

STEP = "build"
TAIL_LINES = 30
PROBE_TIMEOUT_S = 60.0


@dataclass
class BuildReport:
    image: str
    ref: str
    content_tag: str
    strategy: str
    dry_run: bool
    nodes: list[Outcome]
    source: str | None = None
    notes: list[str] = field(default_factory=list)
    log_dir: Path | None = None
    pulled: str | None = None  # image.source: pull: the reference pulled
    digest: str | None = None  # ... its repo digest on the source node
    ray: str | None = None  # ... Ray's version in it ("" none)

    def to_json(self) -> dict[str, object]:
        return {
            "image": self.image, "ref": self.ref, "content_tag": self.content_tag,
            "strategy": self.strategy, "dry_run": self.dry_run, "source": self.source,
            "notes": self.notes,
            **({"pulled": self.pulled, "digest": self.digest, "ray": self.ray}
               if self.pulled else {}),
            "nodes": [{**o.to_json(), "image_id": o.data.get("image_id"), "tail": list(o.tail),
                       "log": o.log} for o in self.nodes],
        }

    @property
    def failed(self) -> list[Outcome]:
        return [n for n in self.nodes if n.status is Status.FAILED]

    @property
    def unreachable(self) -> list[Outcome]:
        return [n for n in self.nodes if n.status is Status.UNREACHABLE]


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
    """Build (or ship) the inventory's image so every target node holds its content tag;
    with `image.source: pull`, pull it on one node and ship that (`image.pull`)."""
    inv = session.inventory
    strat = strategy or inv.image.strategy
    if strat not in ("each", "distribute"):
        raise UsageError(f"unknown strategy {strat!r} (each | distribute)", "--strategy")
    if inv.image.source == "pull":
        if strat == "each":
            raise UsageError("image.source is pull: one node pulls and the others receive its "
                             "copy (distribute); each node pulling could give different images",
                             "--strategy")
        from dgxcluster.image.pull import pull

        return pull(session, nodes=nodes, image=image, refresh=no_cache, dry_run=dry_run,
                    progress=progress)
    run = _Build(session, session.cluster.select(nodes), resolve_image(inv.image, image), strat,
                 no_cache, dry_run, progress or NullProgress())
    walk(EACH if strat == "each" else DISTRIBUTE, run, run.ledger)
    return run.finish()


class _Build:
    """One build: its inputs, the plan, and (in `ledger`) every node's outcome.

    Every method that touches a node records that node's outcome and returns; none raises
    for one node's failure, so one node failing never stops the others.
    """

    def __init__(self, session: Session, targets: list[str], image: str, strategy: str,
                 no_cache: bool, dry_run: bool, prog: Progress) -> None:
        self.session = session
        self.inv = session.inventory
        self.targets = targets
        self.image = image
        self.strategy = strategy
        self.no_cache = no_cache
        self.dry_run = dry_run
        self.prog = prog
        self.builder = self.inv.image.build_node or self.inv.head_name
        extra = [self.builder] if strategy == "distribute" and self.builder not in targets else []
        self.probed = list(targets) + extra
        order = {n: i for i, n in enumerate(self.inv.names)}
        self.ledger = Ledger(sorted(self.probed, key=order.__getitem__), prog)
        self.ctx: BuildContext | None = None
        self.plan: BuildPlan | None = None
        self.image_ids: dict[str, str] = {}

    # -- the stages ----------------------------------------------------------------------

    def check(self) -> None:
        """Connect, hash the context, and ask every node what it holds (one round trip)."""
        down: dict[str, BaseException] = {}
        # Connecting (SSH handshakes) and hashing the context both take a few hundred ms.
        warm = threading.Thread(target=connect_all, args=(self.session, self.probed, down),
                                daemon=True)
        warm.start()
        try:
            inv = self.inv
            self.ctx = scan(inv.local_path(inv.image.context), inv.image.dockerfile,
                            inv.build_args)
        finally:
            warm.join()
        img = ImageId(self.image, self.ctx.content_tag)
        ref, moving = img.ref, img.moving
        bdir = build_subdir(self.image)
        state_root = NodePaths.unresolved(self.inv.state_dir, self.inv.cluster).root
        for n in self.probed:
            self.prog.status(n, "checking")
        answers = self.session.cluster.run(
            probe.argv(ref, moving, state_root, bdir, force=self.no_cache),
            [n for n in self.probed if n not in down], timeout=PROBE_TIMEOUT_S)
        self.probes: dict[str, probe.Probe | BaseException] = {**down, **answers.errors}
        for node, res in answers.values.items():
            if res.ok:
                self.probes[node] = probe.parse(res.stdout, ref, moving)
            else:
                self.probes[node] = DgxClusterError(
                    f"probe exited {res.exit_code}: {res.stderr.strip()}")
        keys = {n: e for n, e in self.probes.items() if isinstance(e, HostKeyError)}
        if keys:  # an unknown or changed host key is a security question, not a node down
            raise NodesFailed("build refused before changing anything: host key check", keys)

    def make_plan(self) -> Next | None:
        """What each node needs; nodes with nothing to do (or down) get their outcome now."""
        assert self.ctx is not None
        img = ImageId(self.image, self.ctx.content_tag)
        plan = self.plan = make_plan(self.ctx, image=self.image, ref=img.ref, moving=img.moving,
                                     strategy=self.strategy, targets=self.targets,
                                     builder=self.builder, probes=self.probes,
                                     no_cache=self.no_cache)
        self.ledger.nodes = [n for n in self.ledger.nodes if n in plan.nodes]
        for note in plan.notes:
            self.prog.message(note)
        if self.dry_run:
            for node in self.ledger.nodes:
                self.ledger.record(_planned(plan.nodes[node]))
            return DONE
        for node, p in plan.nodes.items():
            if p.action is Action.UP_TO_DATE:
                assert p.probe is not None and p.probe.want is not None
                self._done(node, Status.UNCHANGED, "up to date", p.probe.want.id)
            elif p.action in (Action.UNREACHABLE, Action.FAILED):
                status = Status.UNREACHABLE if p.action is Action.UNREACHABLE else Status.FAILED
                self._record(Outcome(node, self._step(node), status, p.error or p.action.value))
        return None

    def build_each(self) -> None:
        """`each`: every node that needs it builds (or re-tags) and is finalized, in parallel."""
        plan = self._plan()
        todo = plan.with_action(Action.BUILD, Action.RETAG)
        self._settle(self.session.cluster.map(self._build_and_finalize, todo))

    def build_source(self) -> None:
        """`distribute`: build on the source node, if it lacks the image."""
        plan = self._plan()
        if plan.source is None:
            return
        sp = plan.nodes[plan.source]
        if sp.action is Action.BUILD:
            self._build(self.session.cluster.conn(plan.source), sp)
        else:
            assert sp.probe is not None and sp.probe.want is not None
            self.image_ids[plan.source] = sp.probe.want.id

    def distribute(self) -> None:
        """`distribute`: stream the source's image into every receiver at once."""
        plan = self._plan()
        source, receivers = plan.source, plan.with_action(Action.RECEIVE)
        if not receivers or source is None:
            return
        if source not in self.image_ids:
            for node in receivers:
                self._fail(node, f"not received: the build on {source} failed")
            return
        from dgxcluster.image.distribute import send_image

        paths = {n: self._paths(plan.nodes[n]) for n in [source, *receivers]}
        got = send_image(self.session, source, plan.ref, receivers, paths=paths,
                         timeout=self.inv.image.build_timeout_s, progress=self.prog)
        for node, o in got.items():
            if o.ok:
                self.image_ids[node] = self.image_ids[source]
                self._record(o.with_(step=self._step(node)), say="received; tagging")
            else:
                self._record(o.with_(step=self._step(node)))

    def tag(self) -> None:
        """`distribute`: check the image ID on every node that got it, move `current`, record."""
        plan = self._plan()
        finals: dict[str, tuple[str, str]] = {}
        if plan.source is not None and plan.nodes[plan.source].action is Action.BUILD \
                and plan.source in self.image_ids:
            finals[plan.source] = ("built", self.image_ids[plan.source])
        for node in self.ledger.live(plan.with_action(Action.RECEIVE)):
            if node in self.image_ids:
                finals[node] = ("received", self.image_ids[node])
        for node in plan.with_action(Action.RETAG):
            p = plan.nodes[node]
            assert p.probe is not None and p.probe.want is not None
            finals[node] = ("tagged", p.probe.want.id)

        def fin(conn: Connection) -> None:
            how, expected = finals[conn.node]
            self._finalize(conn, how, expected)

        self._settle(self.session.cluster.map(fin, list(finals)))

    def finish(self) -> BuildReport:
        plan = self._plan()
        return BuildReport(self.image, plan.ref, plan.content_tag, self.strategy, self.dry_run,
                           self.ledger.last(), plan.source, plan.notes,
                           self.session.logs.root if self.session.logs else None)

    # -- per node ------------------------------------------------------------------------

    def _plan(self) -> BuildPlan:
        assert self.plan is not None
        return self.plan

    def _step(self, node: str) -> str:
        return _STEP_NAMES[self._plan().nodes[node].action]

    def _paths(self, p: NodePlan) -> NodePaths:
        assert p.probe is not None
        return NodePaths(p.probe.home, self.inv.state_dir, self.inv.cluster)

    def _record(self, o: Outcome, say: str | None = None) -> None:
        log = None
        if self.session.logs and self._plan().nodes[o.node].action is Action.BUILD:
            path = self.session.logs.path(o.node, STEP)
            log = str(path) if path.exists() else None
        self.ledger.record(o.with_(log=log), say=say)

    def _done(self, node: str, status: Status, detail: str, image_id: str | None,
              say: str | None = None) -> None:
        self._record(Outcome(node, self._step(node), status, detail,
                             data={"image_id": image_id}), say=say)

    def _fail(self, node: str, err: BaseException | str, tail: Sequence[str] = ()) -> bool:
        from dgxcluster.core.steps import failed

        self._record(failed(node, self._step(node), err, tail=tuple(tail)[-TAIL_LINES:]))
        return False

    def _settle(self, group: GroupResult[None]) -> None:
        """A per-node function that raised (a bug, or an error not foreseen) fails that node."""
        for node, err in group.errors.items():
            self._fail(node, err if isinstance(err, ConnectError) else
                       (str(err) or type(err).__name__))

    def _build_and_finalize(self, conn: Connection) -> None:
        p = self._plan().nodes[conn.node]
        if p.action is Action.BUILD:
            if self._build(conn, p):
                self._finalize(conn, "built", self.image_ids[conn.node])
        else:
            assert p.probe is not None and p.probe.want is not None
            self._finalize(conn, "tagged", p.probe.want.id)

    def _build(self, conn: Connection, p: NodePlan) -> bool:
        """Send the changed context files and run docker build; True if an image came out."""
        node, t0 = conn.node, time.monotonic()
        assert p.sync is not None and p.probe is not None
        tail: deque[str] = deque(maxlen=TAIL_LINES)
        log = self.session.logs.writer(node, STEP) if self.session.logs else None
        paths = self._paths(p)
        secret_dir = ""
        stream: sync.ContextStream | None = None
        try:
            if self.session.secrets:
                secret_dir = paths.build_secrets_dir(self.image, pysecrets.token_hex(6))
            docker_argv = self._docker_argv(paths, p, self._put_secrets(conn, secret_dir))
            self.prog.status(node, f"sending context: {p.sync.describe()}")
            if log:
                log.line(f"# {self._plan().ref} on {node}: {p.sync.describe()}")
            assert self.ctx is not None
            stream = sync.ContextStream(self.ctx.root, p.sync)
            image_id: list[str] = []
            build_dir = paths.build_dir(self.image)
            res = conn.run(sync.argv(build_dir, p.sync, secret_dir, self._plan().ref, docker_argv),
                           stdin=cast(BinaryIO, stream), timeout=self.inv.image.build_timeout_s,
                           on_line=self._on_build_line(node, log, tail, image_id))
            if stream.error is not None:
                tail.append(f"dgxcluster: reading the local context failed: {stream.error}")
            if res.exit_code != 0 or not image_id or not image_id[0]:
                why = f"build failed (exit {res.exit_code})" if res.exit_code else "build left no image"
                return self._fail(node, why, list(tail))
            self.image_ids[node] = image_id[0]
            self._done(node, Status.CHANGED,
                       f"built in {time.monotonic() - t0:.1f}s ({p.sync.describe()})",
                       image_id[0], say="built; tagging")
            return True
        except (DgxClusterError, OSError) as exc:
            return self._fail(node, exc, list(tail))
        finally:
            if stream is not None:
                stream.close()
            if log:
                log.close()

    def _put_secrets(self, conn: Connection, secret_dir: str) -> dict[str, str]:
        """Each secret as a 0600 file in a fresh directory (`docker build --secret` reads it)."""
        files: dict[str, str] = {}
        for sname, value in self.session.secrets.items():
            path = f"{secret_dir}/{sname}"
            conn.put(value.reveal().encode(), path, mode=0o600)
            files[sname] = path
        return files

    def _docker_argv(self, paths: NodePaths, p: NodePlan, secret_files: dict[str, str]) -> list[str]:
        plan = self._plan()
        assert self.ctx is not None and p.probe is not None
        ctx_dir = f"{paths.build_dir(self.image)}/context"
        return dockercmd.build_argv(
            context_dir=ctx_dir, dockerfile=self.ctx.dockerfile, tags=[plan.ref, plan.moving],
            labels={LABEL_CONTENT_TAG: plan.content_tag, LABEL_IMAGE: plan.image},
            build_args=dict(self.ctx.build_args), secret_files=secret_files,
            no_cache=self.no_cache,
            cache_from=[] if self.no_cache or p.probe.current is None else [plan.moving])

    def _on_build_line(self, node: str, log: NodeStepLog | None, tail: deque[str],
                       image_id: list[str]) -> LineCallback:
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

        return on_line

    def _finalize(self, conn: Connection, how: str, expected: str) -> None:
        node = conn.node
        plan = self._plan()
        paths = self._paths(plan.nodes[node])
        rec = ImageRecord(plan.image, plan.content_tag, expected, plan.strategy, how,
                          plan.source or node, now())
        try:
            res = conn.run(dockercmd.finalize_argv(plan.ref, plan.moving, expected,
                                                   paths.records_dir, paths.image_record(plan.image)),
                           stdin=rec.to_json(), timeout=PROBE_TIMEOUT_S)
        except DgxClusterError as exc:
            self._fail(node, exc)
            return
        if res.exit_code != 0:
            msg = res.stderr.strip().splitlines()[-1:] or [f"exit {res.exit_code}"]
            self._fail(node, msg[0], res.stderr.strip().splitlines())
            return
        before = self.ledger.last_of(node)
        if how == "tagged":
            detail = "image was here; moved `current` to it"
        else:
            detail = before.detail if before is not None and before.ok else how
        self._done(node, Status.CHANGED, detail, expected, say=how)


EACH: tuple[Stage[_Build], ...] = (
    Stage("check", _Build.check),
    Stage("plan", _Build.make_plan),
    Stage("build", _Build.build_each),
)
DISTRIBUTE: tuple[Stage[_Build], ...] = (
    Stage("check", _Build.check),
    Stage("plan", _Build.make_plan),
    Stage("build", _Build.build_source),
    Stage("distribute", _Build.distribute),
    Stage("tag", _Build.tag),
)


def connect_all(session: Session, nodes: Sequence[str], down: dict[str, BaseException]) -> None:
    """Open the connections ahead of the first command; nodes that cannot be reached go
    into `down` (and are not tried a second time). Shared with `image.pull`."""

    def one(conn: Connection) -> None:
        conn.connect()

    down.update(session.cluster.map(one, nodes).unreachable)


def _planned(p: NodePlan) -> Outcome:
    status = {Action.UP_TO_DATE: Status.UNCHANGED, Action.UNREACHABLE: Status.UNREACHABLE,
              Action.FAILED: Status.FAILED}.get(p.action, Status.CHANGED)
    detail = p.describe()
    if status is Status.CHANGED:
        detail = f"would {detail}"
    return Outcome(p.node, _STEP_NAMES[p.action], status, detail)


_STEP_NAMES = {Action.UP_TO_DATE: "check", Action.UNREACHABLE: "check", Action.FAILED: "check",
               Action.BUILD: "build", Action.RECEIVE: "receive", Action.RETAG: "tag"}
