"""`model ls` and the model check `start` runs before serving: read-only, nothing is hashed.

`start_check` is what `start` is handed (by the CLI): for the model (and revision) it will
serve, is it complete on every node? `model_presence` asks the same for any model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

from dgxcluster.core.session import Session
from dgxcluster.errors import StepError
from dgxcluster.models.agent import NodeModels
from dgxcluster.models.layout import CacheEntry, NodeCache
from dgxcluster.models.presence import NodeEntry, Presence, evaluate, revision_presence
from dgxcluster.models.repoid import RepoId, check_revision

if TYPE_CHECKING:
    from dgxcluster.core.nodepaths import NodePaths
    from dgxcluster.inventory.schema import InventoryModel
    from dgxcluster.remote.connection import Connection


def _scan(session: Session, folders: Sequence[str],
          nodes: Sequence[str] | None = None) -> dict[str, NodeCache | BaseException]:
    res = session.cluster.map(
        lambda c: NodeModels.open(session, c.node).scan(folders),
        list(nodes) if nodes is not None else session.inventory.names,
    )
    out: dict[str, NodeCache | BaseException] = {}
    for n in res:
        v = res[n]
        out[n] = v
    return out


def model_presence(session: Session, model: str | RepoId, revision: str | None = None,
                   nodes: Sequence[str] | None = None) -> dict[str, Presence]:
    """Is `model` at `revision` (default: main) complete on each node (default: all)?

    A node is complete when it holds every file of the commit the head resolves the
    revision to, each blob at its right size and not known corrupt, no copy in progress,
    and its own refs/<revision> names that same commit (vLLM on each node reads its own).
    Unreachable nodes are answered too (complete=False, unreachable=True), never raised.
    Raises UsageError for a malformed model id or revision.
    """
    repo = model if isinstance(model, RepoId) else RepoId.parse(model, "serve.model")
    rev = check_revision(revision, "serve.revision") or "main"
    scans = _scan(session, [repo.folder], nodes)
    entries: dict[str, NodeEntry] = {
        n: s if isinstance(s, BaseException) else s.entries.get(repo.folder)
        for n, s in scans.items()
    }
    return revision_presence(repo.id, entries, rev, session.inventory.head_name)


@dataclass(frozen=True)
class ServedModel:
    """What `start`'s preflight looks for: a hub id and revision, or why it cannot look."""

    repo: RepoId | None
    revision: str
    skip_reason: str = ""


def served_model(model: str, revision: str | None) -> ServedModel:
    """A local path (vLLM also serves those) is not looked for; anything else must be an id."""
    rev = check_revision(revision, "serve.revision") or "main"
    if model.startswith(("/", "./", "../", "~")):
        return ServedModel(None, rev, f"{model} is a local path, not a hub id: not checked")
    return ServedModel(RepoId.parse(model, "serve.model"), rev)


def scan_one(models: NodeModels, repo: RepoId) -> NodeEntry:
    """One node's cache entry for `repo` (None when absent); a failed scan is returned."""
    try:
        return models.scan([repo.folder]).entries.get(repo.folder)
    except StepError as exc:
        return exc


def missing_lines(served: ServedModel, presence: dict[str, Presence]) -> dict[str, str]:
    """{node: problem} for each node where the served revision is not complete."""
    assert served.repo is not None
    return {
        node: (f"model {served.repo.id} ({served.revision}) is not complete here: {p.reason}; "
               f"run `dgxcluster model sync {served.repo.id}` (or `model pull`), or start with "
               "--skip-model-check")
        for node, p in presence.items() if not p.complete
    }


def list_models(session: Session) -> list[Presence]:
    """Every model revision in any node's cache, one row per node (also where it is absent)."""
    scans = _scan(session, [])
    folders = sorted({f for s in scans.values() if isinstance(s, NodeCache) for f in s.entries})
    rows: list[Presence] = []
    for folder in folders:
        repo = RepoId.from_folder(folder)
        name = repo.id if repo else folder
        entries: dict[str, NodeEntry] = {
            n: s if isinstance(s, BaseException) else s.entries.get(folder)
            for n, s in scans.items()
        }
        commits = sorted({c for e in entries.values() if isinstance(e, CacheEntry)
                          for c in e.commits})
        if not commits:
            rows.extend(_no_snapshot(name, entries))
        for commit in commits:
            states = evaluate(name, entries, commit)
            rows.extend(states[n] for n in scans)
    for n, s in scans.items():
        if isinstance(s, BaseException) and not folders:
            rows.append(evaluate("", {n: s}, "")[n])
    return rows


def _no_snapshot(name: str, entries: dict[str, NodeEntry]) -> list[Presence]:
    """An entry with blobs but no snapshot (e.g. a copy cut off before any link landed)."""
    out = []
    for n, e in entries.items():
        if isinstance(e, CacheEntry):
            out.append(Presence(n, name, None, tuple(sorted(e.refs)), 0, e.size, False, False,
                                "no snapshot (download or copy incomplete)"))
        else:
            out.append(evaluate(name, {n: e}, "")[n])
    return out


@dataclass(frozen=True)
class StartModelCheck:
    """`start`'s preflight question, is the served model complete on every node?, in the
    shape `serving.start.ModelCheck` asks it. The CLI hands it to `start`: capabilities do
    not import each other."""

    served: ServedModel
    hf_cache: str
    head: str

    @property
    def active(self) -> bool:
        return self.served.repo is not None

    @property
    def off_reason(self) -> str:
        return self.served.skip_reason

    @property
    def model(self) -> str:
        return self.served.repo.id if self.served.repo else ""

    def scan(self, conn: Connection, paths: NodePaths) -> object:
        """One node's cache entry for the model (during preflight, on its connection)."""
        assert self.served.repo is not None
        return scan_one(NodeModels.at(conn, paths, self.hf_cache), self.served.repo)

    def judge(self, scans: Mapping[str, object]) -> dict[str, tuple[bool, str]]:
        """{node: (complete, what to say)} over the nodes scanned."""
        assert self.served.repo is not None
        entries = {n: cast(NodeEntry, e) for n, e in scans.items()}
        presence = revision_presence(self.served.repo.id, entries, self.served.revision, self.head)
        missing = missing_lines(self.served, presence)
        return {node: (False, missing[node]) if node in missing else
                (True, f"model {self.served.repo.id} complete "
                       f"({(p.commit or '?')[:12]}, {p.files} files)")
                for node, p in presence.items()}


def start_check(inv: InventoryModel, skip: bool = False) -> StartModelCheck:
    """The check `start` runs for this inventory (`skip`: --skip-model-check). Raises
    UsageError for a malformed serve.model or serve.revision."""
    if skip:
        served = ServedModel(None, "", "--skip-model-check")
    elif not inv.serve.model:
        served = ServedModel(None, "", "no serve.model")  # start refuses it, naming the key
    else:
        served = served_model(inv.serve.model, inv.serve.revision)
    return StartModelCheck(served, inv.container.hf_cache, inv.head_name)
