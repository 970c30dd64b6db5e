"""Model ids and revisions as the Hugging Face hub accepts them, checked before anything runs.

A model id becomes a directory name in every node's cache and an argv element of `hf
download`; a revision becomes a path under `refs/`. Anything outside the hub's own rules
(`;`, `$()`, quotes, `..`, a leading `-`, newlines, over-long names) is refused here with a
message naming the argument, so it never reaches a node.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from dgxcluster.errors import UsageError

_PART = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9._-]*[A-Za-z0-9_])?")
_REVISION = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._/+-]*")
COMMIT_RE = re.compile(r"[0-9a-f]{40}")
MAX_PART = 96
MAX_REVISION = 128
FOLDER_PREFIX = "models--"


def shown(value: str, limit: int = 60) -> str:
    """A user's value, safe to print: repr'd (newlines visible) and shortened."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 4] + "...'"


@dataclass(frozen=True)
class RepoId:
    """`namespace/name` (or a bare `name`) of a model repository on the hub."""

    namespace: str | None
    name: str

    @property
    def id(self) -> str:
        return f"{self.namespace}/{self.name}" if self.namespace else self.name

    @property
    def folder(self) -> str:
        """The cache entry's directory under `<hf_cache>/hub`, as huggingface_hub names it."""
        return FOLDER_PREFIX + self.id.replace("/", "--")

    def __str__(self) -> str:
        return self.id

    @classmethod
    def parse(cls, text: str, option: str = "MODEL") -> RepoId:
        """Validate against the hub's repo-id rules; UsageError naming `option` otherwise."""
        why = _problem(text)
        if why:
            raise UsageError(f"{shown(text)} is not a Hugging Face model id: {why} "
                             "(expected org/name, e.g. Qwen/Qwen3-8B)", option)
        ns, _, name = text.rpartition("/")
        return cls(ns or None, name)

    @classmethod
    def from_folder(cls, folder: str) -> RepoId | None:
        """The id of a `models--org--name` directory, or None if it is not one."""
        if not folder.startswith(FOLDER_PREFIX):
            return None
        parts = folder[len(FOLDER_PREFIX):].split("--")
        if len(parts) not in (1, 2):
            return None
        text = "/".join(parts)
        return None if _problem(text) else cls.parse(text)


def _problem(text: str) -> str:
    if not isinstance(text, str) or not text:
        return "it is empty"
    if any(ord(c) < 32 or ord(c) == 127 for c in text):
        return "it contains control characters (newline, tab, ...)"
    if text.count("/") > 1:
        return "it has more than one '/'"
    for part in text.split("/"):
        if not part:
            return "an empty part around '/'"
        if len(part) > MAX_PART:
            return f"a part is longer than {MAX_PART} characters"
        if not _PART.fullmatch(part):
            return ("only letters, digits, '-', '_' and '.' are allowed, and a part cannot "
                    "start or end with '-' or '.'")
    if "--" in text or ".." in text:
        return "'--' and '..' are not allowed"
    if text.endswith(".git"):
        return "it cannot end with '.git'"
    return ""


def check_revision(text: str | None, option: str = "--revision") -> str | None:
    """A branch, tag or commit hash; it becomes a path under refs/, so it is checked hard."""
    if text is None:
        return None
    problem = ""
    if not text:
        problem = "it is empty"
    elif len(text) > MAX_REVISION:
        problem = f"it is longer than {MAX_REVISION} characters"
    elif any(ord(c) < 32 or ord(c) == 127 for c in text):
        problem = "it contains control characters"
    elif not _REVISION.fullmatch(text):
        problem = "only letters, digits and '.', '_', '-', '+', '/' are allowed (not first)"
    elif ".." in text or "//" in text or text.endswith(("/", ".lock", ".")) or "/." in text:
        problem = "'..', '//', '/.', and a trailing '/', '.' or '.lock' are not allowed"
    if problem:
        raise UsageError(f"{shown(text)} is not a valid revision: {problem}", option)
    return text
