"""`dgxcluster build` for `image.source: pull`: pull a prebuilt image (NGC's vLLM container, a
community image) on one node and ship it node to node, with the guarantees a build gets.

Declared as a stage list (`PULL`) walked by `core.stages`:
1. check: one round trip per node (`pullprobe`): the pulled name, dgxcluster's tag
   `<name>:pull-<hex>` and `current`, each with its image ID; the node's record;
2. plan (`pullplan`): nothing to do where the tags already name the source's image;
3. pull: on the source only, and only if it lacks the image (or `--no-cache`): `docker
   pull` (after a `docker login` kept to that command when `image.login` is set), streamed
   live; then `ray --version` in the image, once; then the source's tags and record;
4. distribute: `docker save` streamed into `docker load` on every receiver (`distribute`);
5. tag: every receiver's image ID checked against the source's, its tags and record written.
The image ID is the identity: the same on every node, recorded with the repo digest.
"""

from __future__ import annotations

import json
import time
from collections import deque
from collections.abc import Sequence
from pathlib import Path

from dgxcluster.core import naming
from dgxcluster.core.dockerrun import Run, docker_run
from dgxcluster.core.imageid import pull_tag
from dgxcluster.core.nodepaths import NodePaths
from dgxcluster.core.progress import NullProgress, Progress
from dgxcluster.core.session import Session
from dgxcluster.core.stages import DONE, Ledger, Next, Stage, walk
from dgxcluster.core.steps import Outcome, Status, failed
from dgxcluster.errors import DgxClusterError, HostKeyError, NodesFailed, UsageError
from dgxcluster.facts import docker_pull, image_entrypoint, ray_version
from dgxcluster.image import dockercmd, pullprobe
from dgxcluster.image.pullplan import STEP_NAMES, Act, PullPlan, make_plan, settle
from dgxcluster.image.records import ImageRecord, now
from dgxcluster.image.run import PROBE_TIMEOUT_S, TAIL_LINES, BuildReport, connect_all
from dgxcluster.inventory import imageref
from dgxcluster.remote.command import shell
from dgxcluster.remote.connection import Connection
from dgxcluster.secrets import Secret, load_secrets

STEP = "build"
RAY_CHECK_S = 120.0


def pull(session: Session, *, nodes: Sequence[str] | None = None, image: str | None = None,
         refresh: bool = False, dry_run: bool = False,
         progress: Progress | None = None) -> BuildReport:
    """Make every target node hold the image `image.ref` names, as the source node has it."""
    from dgxcluster.image.run import resolve_image

    inv = session.inventory
    assert inv.image.ref is not None
    run = _Pull(session, session.cluster.select(nodes), resolve_image(inv.image, image), refresh,
                dry_run, progress or NullProgress())
    walk(PULL, run, run.ledger)
    return run.finish()


class _Pull:
    """One pull: its inputs, the plan and (in `ledger`) every node's outcome."""

    def __init__(self, session: Session, targets: list[str], name: str, refresh: bool,
                 dry_run: bool, prog: Progress) -> None:
        inv = session.inventory
        assert inv.image.ref is not None
        self.session, self.inv, self.targets = session, inv, targets
        self.ref = inv.image.ref
        parsed = imageref.parse(self.ref)
        self.taggable = parsed.taggable
        self.repository = parsed.name
        self.content_tag = pull_tag(self.ref)
        self.want, self.moving = f"{name}:{self.content_tag}", f"{name}:{naming.MOVING_TAG}"
        self.name, self.refresh, self.dry_run, self.prog = name, refresh, dry_run, prog
        self.builder = inv.image.build_node or inv.head_name
        self.probed = list(targets) + ([self.builder] if self.builder not in targets else [])
        order = {n: i for i, n in enumerate(inv.names)}
        self.ledger = Ledger(sorted(self.probed, key=order.__getitem__), prog)
        self.plan: PullPlan | None = None
        self.digest: str | None = None
        self.ray: str | None = None  # Ray's version in the image; "" none; None not known
        self.ray_error: str | None = None
        self.pulled_detail = "pulled"
        self.entrypoint: list[str] | None = None  # the image's ENTRYPOINT, when asked

    # -- the stages ----------------------------------------------------------------------

    def check(self) -> None:
        down: dict[str, BaseException] = {}
        connect_all(self.session, self.probed, down)
        for n in self.probed:
            self.prog.status(n, "checking")
        record = NodePaths.unresolved(self.inv.state_dir, self.inv.cluster).image_record(self.name)
        answers = self.session.cluster.run(
            pullprobe.argv(self.taggable, self.want, self.moving, record),
            [n for n in self.probed if n not in down], timeout=PROBE_TIMEOUT_S)
        self.probes: dict[str, pullprobe.PullProbe | BaseException] = {**down, **answers.errors}
        for node, res in answers.values.items():
            self.probes[node] = pullprobe.parse(res.stdout) if res.ok else DgxClusterError(
                f"probe exited {res.exit_code}: {res.stderr.strip()}")
        keys = {n: e for n, e in self.probes.items() if isinstance(e, HostKeyError)}
        if keys:
            raise NodesFailed("build refused before changing anything: host key check", keys)

    def make_plan(self) -> Next | None:
        plan = self.plan = make_plan(
            ref=self.ref, want=self.want, moving=self.moving, content_tag=self.content_tag,
            taggable=self.taggable, targets=self.targets, builder=self.builder,
            probes=self.probes, refresh=self.refresh)
        self.ledger.nodes = [n for n in self.ledger.nodes if n in plan.nodes]
        for note in plan.notes:
            self.prog.message(note)
        if self.dry_run:
            for node in self.ledger.nodes:
                self._planned(node)
            return DONE
        for node, p in plan.nodes.items():
            if p.act is Act.UP_TO_DATE:
                self._record(node, Status.UNCHANGED, "up to date", plan.source_id)
            elif p.act in (Act.UNREACHABLE, Act.FAILED):
                status = Status.UNREACHABLE if p.act is Act.UNREACHABLE else Status.FAILED
                self._record(node, status, p.error or p.act.value)
        return None

    def pull(self) -> Next | None:
        """The source gets the image (pulled, or found there), its Ray is asked, it is tagged."""
        plan = self._plan()
        if plan.source is None or not plan.with_act(Act.PULL, Act.FOUND, Act.RECEIVE, Act.TAG):
            return DONE
        src = plan.nodes[plan.source]
        conn = self.session.cluster.conn(plan.source)
        if src.act is Act.PULL and not self._docker_pull(conn):
            for node in plan.with_act(Act.RECEIVE):
                self._record(node, Status.FAILED, f"not received: the pull on {plan.source} failed")
            return DONE
        assert plan.source_id is not None
        settle(plan, plan.source_id)
        if src.probe is not None and src.probe.record and src.probe.record.image_id == \
                plan.source_id and src.probe.record.ray is not None:
            self.ray = src.probe.record.ray
            self.digest = self.digest or src.probe.record.digest
        else:
            self.ray = self._ray_version(conn)
            self.entrypoint = self._entrypoint(conn)
        self.digest = self.digest or self._digest_of(src.probe)
        if src.act in (Act.PULL, Act.FOUND):
            how = "pulled" if src.act is Act.PULL else "found"
            self._pin(conn, how)
        return None

    def distribute(self) -> None:
        plan = self._plan()
        receivers = [n for n in plan.with_act(Act.RECEIVE) if self.ledger.last_of(n) is None]
        if not receivers or plan.source is None or not self._source_ok():
            return
        from dgxcluster.image.distribute import send_image

        paths = {n: self._paths(n) for n in [plan.source, *receivers]}
        got = send_image(self.session, plan.source, self.want, receivers, paths=paths,
                         timeout=self.inv.image.build_timeout_s, progress=self.prog)
        for o in got.values():
            self.ledger.record(o.with_(step=STEP_NAMES[Act.RECEIVE]),
                               say="received; tagging" if o.ok else None)

    def tag(self) -> None:
        plan = self._plan()
        if plan.source is None or not self._source_ok():
            return
        todo = [n for n in plan.with_act(Act.RECEIVE) if (o := self.ledger.last_of(n)) and o.ok]
        todo += plan.with_act(Act.TAG)

        def one(conn: Connection) -> None:
            act = plan.nodes[conn.node].act
            self._pin(conn, "received" if act is Act.RECEIVE else "tagged")

        group = self.session.cluster.map(one, todo)
        for node, err in group.errors.items():
            self.ledger.record(failed(node, STEP_NAMES[plan.nodes[node].act], err))

    def finish(self) -> BuildReport:
        plan = self._plan()
        notes = [*plan.notes, *self._ray_notes()]
        return BuildReport(self.name, self.want, self.content_tag, "distribute", self.dry_run,
                           self.ledger.last(), plan.source, notes,
                           self.session.logs.root if self.session.logs else None,
                           pulled=self.ref, digest=self.digest, ray=self.ray)

    # -- the source ------------------------------------------------------------------------

    def _docker_pull(self, conn: Connection) -> bool:
        """`docker pull` on the source, live; True with `plan.source_id` set if it worked."""
        plan, node, t0 = self._plan(), conn.node, time.monotonic()
        login = self.inv.image.login
        password = self._password() if login else None
        tail: deque[str] = deque(maxlen=TAIL_LINES)
        progress = docker_pull.PullProgress()
        log = self.session.logs.writer(node, STEP) if self.session.logs else None
        result: list[str] = []

        def on_line(_stream: str, raw: str) -> None:
            line = self.session.redactor(raw)
            if line.startswith(dockercmd.PULLED_PREFIX):
                result.append(line[len(dockercmd.PULLED_PREFIX):].strip())
                return
            if log:
                log.line(line)
            tail.append(line)
            if progress.feed(line):
                self.prog.status(node, progress.describe())
            else:
                self.prog.line(node, line)

        self.prog.status(node, f"pulling {self.ref}")
        registry = (login.registry or imageref.parse(self.ref).registry) if login else None
        try:
            res = conn.run(dockercmd.pull_argv(self.ref, registry, login.user if login else None),
                           stdin=password.reveal().encode() if password else None,
                           timeout=self.inv.image.build_timeout_s, on_line=on_line)
        except DgxClusterError as exc:
            self.ledger.record(failed(node, "pull", exc, tail=tuple(tail)))
            return False
        finally:
            if log:
                log.close()
        said = docker_pull.parse("\n".join(tail))
        image_id, _, digests = (result[0] if result else "").partition(" ")
        if res.exit_code != 0 or not image_id.startswith("sha256:"):
            why = said.error or f"docker pull exited {res.exit_code}"
            if res.exit_code == dockercmd.EXIT_LOGIN:
                why = f"{why} (docker login to {registry or 'Docker Hub'} as {login.user if login else '?'})"
            self._record(node, Status.FAILED, f"pull failed: {why}", tail=tuple(tail))
            return False
        plan.source_id = image_id
        self.digest = self._pick_digest(digests) or (
            f"{self.repository}@{said.digest}" if said.digest else None)
        got = "downloaded" if said.updated else "already up to date"
        # layers counted over every line (the tail holds only the last TAIL_LINES)
        layers = (f"{len(progress.layers)} layer(s), {progress.present} already here"
                  if progress.layers else "no layer to fetch")
        self.pulled_detail = f"pulled {self.ref} in {time.monotonic() - t0:.1f}s ({got}; {layers})"
        return True

    def _password(self) -> Secret:
        """The registry password, from the environment or secrets.file (never the inventory);
        masked in everything dgxcluster prints or logs from here on."""
        login = self.inv.image.login
        assert login is not None
        file = self.inv.local_path(self.inv.secrets.file) if self.inv.secrets.file else None
        found = load_secrets([login.password_secret], file)
        if login.password_secret not in found:
            raise UsageError(f"{login.password_secret} is not set: export it, or put "
                             f"{login.password_secret}=... in secrets.file (mode 0600)",
                             "image.login.password_secret")
        secret = found[login.password_secret]
        self.session.redactor.add(secret)
        return secret

    def _ray_version(self, conn: Connection) -> str | None:
        """Ray's version in the source's image; "" when it has none; None if docker failed."""
        plan = self._plan()
        assert plan.source_id is not None
        self.prog.status(conn.node, "asking the image for Ray")
        name = naming.image_check_container(self.inv.cluster)
        run = docker_run(self.inv.container, Run(
            name=name, image=plan.source_id, command=ray_version.ARGS,
            entrypoint=ray_version.ENTRYPOINT, remove=True, accelerated=False))
        try:
            res = conn.run(shell('n=$1; shift; docker rm -f "$n" >/dev/null 2>&1; exec "$@"',
                                 name, *run), timeout=RAY_CHECK_S)
        except DgxClusterError as exc:
            self.ray_error = str(exc)
            return None
        found = ray_version.parse(res.stdout + res.stderr, res.exit_code)
        self.ray_error = found.error
        return "" if found.missing else found.version

    def _entrypoint(self, conn: Connection) -> list[str] | None:
        """The source image's ENTRYPOINT (None when docker's answer cannot be read)."""
        assert self._plan().source_id is not None
        try:
            res = conn.run(image_entrypoint.argv(str(self._plan().source_id)),
                           timeout=PROBE_TIMEOUT_S)
        except DgxClusterError:
            return None
        return image_entrypoint.parse(res.stdout) if res.ok else None

    def _pick_digest(self, digests_json: str) -> str | None:
        try:
            digests = [str(d) for d in json.loads(digests_json or "[]")]
        except (ValueError, TypeError):
            return None
        mine = [d for d in digests if d.split("@", 1)[0] in (self.repository,
                                                             self.repository.removeprefix(
                                                                 "docker.io/library/"),
                                                             self.repository.removeprefix(
                                                                 "docker.io/"))]
        chosen = mine or digests
        return chosen[0] if chosen else None

    def _digest_of(self, probe: pullprobe.PullProbe | None) -> str | None:
        return self._pick_digest(json.dumps(list(probe.ref.digests))) if probe else None

    def _source_ok(self) -> bool:
        plan = self._plan()
        assert plan.source is not None
        last = self.ledger.last_of(plan.source)
        if plan.nodes[plan.source].act is Act.UP_TO_DATE:
            return True
        if last is not None and last.ok:
            return True
        for node in plan.with_act(Act.RECEIVE, Act.TAG):
            if self.ledger.last_of(node) is None:
                self._record(node, Status.FAILED, f"not received: {plan.source} failed")
        return False

    # -- per node --------------------------------------------------------------------------

    def _pin(self, conn: Connection, how: str) -> None:
        """Point want, current (and the pulled name) at the source's image ID; write the record."""
        plan, node = self._plan(), conn.node
        assert plan.source is not None and plan.source_id is not None
        paths = self._paths(node)
        tags = [self.want, self.moving] + ([self.taggable] if self.taggable else [])
        rec = ImageRecord(self.name, self.content_tag, plan.source_id, "distribute", how, plan.source,
                          now(), ref=self.ref, digest=self.digest, ray=self.ray)
        act = plan.nodes[node].act
        try:
            res = conn.run(dockercmd.pin_argv(plan.source_id, paths.records_dir,
                                              paths.image_record(self.name), tags),
                           stdin=rec.to_json(), timeout=PROBE_TIMEOUT_S)
        except DgxClusterError as exc:
            self.ledger.record(failed(node, STEP_NAMES[act], exc))
            return
        if res.exit_code != 0:
            lines = res.stderr.strip().splitlines() or [f"exit {res.exit_code}"]
            self._record(node, Status.FAILED, lines[-1], tail=tuple(lines))
            return
        before = self.ledger.last_of(node)
        detail = {"pulled": self.pulled_detail,
                  "found": f"found {self.ref} here; tagged",
                  "tagged": "image was here; tagged"}.get(how)
        if detail is None:
            detail = before.detail if before is not None and before.ok else how
        if node == plan.source:
            detail += f"; {self._ray_words()}"
        self._record(node, Status.CHANGED, detail, plan.source_id, say=how)

    def _record(self, node: str, status: Status, detail: str, image_id: str | None = None,
                tail: tuple[str, ...] = (), say: str | None = None) -> None:
        log = None
        if self.session.logs and status is Status.FAILED:
            path: Path = self.session.logs.path(node, STEP)
            log = str(path) if path.exists() else None
        step = STEP_NAMES[self._plan().nodes[node].act]
        self.ledger.record(Outcome(node, step, status, detail, tail=tail[-TAIL_LINES:],
                                   log=log, data={"image_id": image_id}), say=say)

    def _planned(self, node: str) -> None:
        plan = self._plan()
        act = plan.nodes[node].act
        status = {Act.UP_TO_DATE: Status.UNCHANGED, Act.UNREACHABLE: Status.UNREACHABLE,
                  Act.FAILED: Status.FAILED}.get(act, Status.CHANGED)
        detail = plan.describe(node)
        self._record(node, status, f"would {detail}" if status is Status.CHANGED else detail)

    def _paths(self, node: str) -> NodePaths:
        p = self._plan().nodes.get(node)
        home = p.probe.home if p is not None and p.probe is not None else ""
        probe = self.probes.get(node)
        if not home and isinstance(probe, pullprobe.PullProbe):
            home = probe.home
        return NodePaths(home, self.inv.state_dir, self.inv.cluster)

    def _plan(self) -> PullPlan:
        assert self.plan is not None
        return self.plan

    def _ray_words(self) -> str:
        if self.ray is None:
            return "Ray: unknown"
        return f"Ray {self.ray}" if self.ray else "no Ray in this image"

    def _ray_notes(self) -> list[str]:
        if self.dry_run or self._plan().source is None:
            return []
        notes = []
        if self.entrypoint and not image_entrypoint.passes_through(self.entrypoint):
            notes.append(f"{self.ref}'s ENTRYPOINT is {json.dumps(self.entrypoint)}: `start` "
                         "passes `ray start ...` to it as arguments, so it must run the command "
                         "it is given, or start's containers will not run Ray")
        return notes + self._ray_version_notes()

    def _ray_version_notes(self) -> list[str]:
        if self.ray == "":
            return [f"{self.ref} has no Ray, and `start` runs vLLM over Ray: it will refuse "
                    "this image. Use an image with Ray, or build one (image.source: build)."]
        if self.ray is None and self.ray_error:
            return [f"could not tell whether {self.ref} has Ray: {self.ray_error}"]
        if self.ray and self.ray != self.inv.ray.version:
            return [f"{self.ref} has Ray {self.ray}; ray.version says {self.inv.ray.version} "
                    "(the image's Ray is what runs; set ray.version to match)"]
        return []


PULL: tuple[Stage[_Pull], ...] = (
    Stage("check", _Pull.check),
    Stage("plan", _Pull.make_plan),
    Stage("pull", _Pull.pull),
    Stage("distribute", _Pull.distribute),
    Stage("tag", _Pull.tag),
)
