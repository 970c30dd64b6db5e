"""`model ls` and the model check `start` runs before serving: read-only, nothing is hashed.

`StartModelCheck` is what `start`'s preflight runs (the CLI hands it in; serving does not
import models): for the model (and revision) it will serve, is it complete on every node?
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from dgxcluster.core.nodepaths import NodePaths
from dgxcluster.core.session import Session
from dgxcluster.errors import StepError
from dgxcluster.models.agent import NodeModels
from dgxcluster.models.layout import CacheEntry, NodeCache
from dgxcluster.models.presence import NodeEntry, Presence, evaluate, revision_presence
from dgxcluster.models.repoid import RepoId, check_revision
from dgxcluster.remote.connection import Connection
from dgxcluster.vllmcli import fit


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


@dataclass(frozen=True)
class StartModelCheck:
    """The model check of `start`'s preflight (`serving.preflight.NodeCheck`): is the served
    revision complete in every node's HF cache? Handed to `start` by the CLI."""

    served: ServedModel
    hf_cache: str
    head: str

    @property
    def label(self) -> str:
        return self.served.repo.id if self.served.repo else ""

    @property
    def skip_reason(self) -> str:
        return "" if self.served.repo is not None else self.served.skip_reason

    def read(self, conn: Connection, paths: NodePaths) -> NodeEntry:
        assert self.served.repo is not None
        return scan_one(NodeModels.at(conn, paths, self.hf_cache), self.served.repo)

    def _presence(self, answers: Mapping[str, object]) -> tuple[dict[str, NodeEntry],
                                                               dict[str, Presence]]:
        repo = self.served.repo
        assert repo is not None
        entries: dict[str, NodeEntry] = {
            n: e for n, e in answers.items() if e is None or isinstance(e, (CacheEntry, BaseException))}
        return entries, revision_presence(repo.id, entries, self.served.revision, self.head)

    def weights(self, answers: Mapping[str, object]) -> int | None:
        """Bytes of the served revision's weight files (safetensors), from the scans `read` made
        (for `start`'s will-it-fit); None when no node holds it complete or it has none."""
        entries, presence = self._presence(answers)
        for node, p in presence.items():
            e = entries.get(node)
            if p.complete and p.commit and isinstance(e, CacheEntry):
                sizes = {path: (e.blob_size(blob) if blob else
                                e.files.get(f"snapshots/{p.commit}/{path}", (0, None))[0]) or 0
                         for path, blob in e.snapshot(p.commit).items()}
                return fit.safetensors_bytes(sizes) or None
        return None

    def judge(self, answers: Mapping[str, object]) -> dict[str, tuple[bool, str]]:
        repo = self.served.repo
        assert repo is not None
        _, presence = self._presence(answers)
        missing = missing_lines(self.served, presence)
        return {node: (False, missing[node]) if node in missing else
                (True, f"model {repo.id} complete ({(p.commit or '?')[:12]}, {p.files} files)")
                for node, p in presence.items()}


def start_check(model: str, revision: str | None, hf_cache: str, head: str) -> StartModelCheck:
    """The check for serving `model` at `revision` (UsageError for a malformed id)."""
    return StartModelCheck(served_model(model, revision), hf_cache, head)


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
