"""What a node holds for one image, learned in one round trip (a fact: a script plus a parser).

`build` asks every node this first, and does nothing more where the content tag is already
there: that is what keeps a no-op build under a second. `check.image_state` (for `start` and
`status`) asks the same question without the build-context listing.

The script prints tab-separated records:
  home <TAB> $HOME
  inspect <TAB> <image id> <TAB> <labels as JSON>, or docker's complaint (absent tag, daemon down)
  inspect-exit <TAB> <docker's exit status>
  file <TAB> path <TAB> type <TAB> size <TAB> mtime <TAB> mode <TAB> link   (node's build context copy)
  manifest <TAB> <JSON written by the last context sync>
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from dgxcluster.core.naming import LABEL_CONTENT_TAG
from dgxcluster.remote.command import shell

#: $1 content ref, $2 moving ref, $3 state root (may start with ~), $4 build dir below it
#: ("" = do not list), $5 "1" = list even when the content tag is present (a forced rebuild).
#: One `docker image inspect` for both tags: found ones print in argument order, absent
#: ones are named on stderr (merged), so `parse` can tell which is which.
SCRIPT = r"""ref=$1 cur=$2 root=$3 bdir=$4 force=$5
case $root in "~") root=$HOME ;; "~/"*) root=$HOME/${root#"~/"} ;; esac
printf 'home\t%s\n' "$HOME"
out=$(docker image inspect --format '{{.Id}}	{{json .Config.Labels}}' "$ref" "$cur" 2>&1)
rc=$?
printf '%s\n' "$out" | while IFS= read -r l; do printf 'inspect\t%s\n' "$l"; done
printf 'inspect-exit\t%s\n' "$rc"
[ -n "$bdir" ] || exit 0
if [ "$force" != 1 ]; then
  case $out in *"No such image: $ref"*|*"No such object: $ref"*) ;; *) exit 0 ;; esac
fi
d=$root/$bdir
if [ -d "$d/context" ]; then
  (cd "$d/context" && find . -mindepth 1 \( -type f -o -type l \) \
     -printf 'file\t%P\t%y\t%s\t%T@\t%m\t%l\n')
fi
if [ -f "$d/manifest.json" ]; then printf 'manifest\t'; tr -d '\n' < "$d/manifest.json"; echo; fi
"""


@dataclass(frozen=True)
class ImageInfo:
    """One tag as a node's docker sees it."""

    id: str
    labels: dict[str, str]

    @property
    def content_tag(self) -> str | None:
        return self.labels.get(LABEL_CONTENT_TAG)


@dataclass(frozen=True)
class RemoteFile:
    """A file in a node's copy of the build context, as `find -printf` lists it."""

    path: str
    kind: str  # "f" or "l"
    size: int
    mtime: int
    mode: int
    link: str


@dataclass(frozen=True)
class Probe:
    home: str = ""
    docker_error: str | None = None
    want: ImageInfo | None = None
    current: ImageInfo | None = None
    files: dict[str, RemoteFile] | None = None  # None: not listed (tag present, or not asked)
    manifest: dict[str, Any] | None = None

    @property
    def has_want(self) -> bool:
        return self.want is not None

    @property
    def current_is_want(self) -> bool:
        return self.want is not None and self.current is not None and self.current.id == self.want.id


def argv(ref: str, moving: str, state_dir: str, build_dir: str = "", force: bool = False) -> list[str]:
    return shell(SCRIPT, ref, moving, state_dir, build_dir, "1" if force else "0")


def _image(line: str) -> ImageInfo:
    image_id, _, labels_json = line.partition("\t")
    labels: dict[str, str] = {}
    try:
        parsed = json.loads(labels_json) if labels_json.strip() else None
    except json.JSONDecodeError:
        parsed = None
    if isinstance(parsed, dict):
        labels = {str(k): str(v) for k, v in parsed.items()}
    return ImageInfo(image_id.strip(), labels)


def _absent(complaint: str, ref: str) -> bool:
    """docker's "No such image: REF" (its wording varies a little across versions)."""
    return re.search(rf"No such (?:image|object): {re.escape(ref)}(?:$|[\s.,;])", complaint) is not None


def _images(lines: list[str], rc: int, ref: str, moving: str
            ) -> tuple[ImageInfo | None, ImageInfo | None, str | None]:
    """(want, current, docker error) from `docker image inspect ref moving` (pure)."""
    found = [_image(ln) for ln in lines if ln.startswith("sha256:")]
    complaints = [ln.strip() for ln in lines if ln.strip() and not ln.startswith("sha256:")]
    missing_want = any(_absent(c, ref) for c in complaints)
    missing_cur = any(_absent(c, moving) for c in complaints)
    other = [c for c in complaints if not (_absent(c, ref) or _absent(c, moving))]
    if rc != 0 and (other or len(found) + missing_want + missing_cur < 2):
        return None, None, (other[0] if other else f"docker image inspect exited {rc}")
    want = None if missing_want else (found.pop(0) if found else None)
    current = None if missing_cur else (found.pop(0) if found else None)
    return want, current, None


def parse(text: str, ref: str, moving: str) -> Probe:
    """Parse the script's output; unknown or malformed lines are ignored, never fatal."""
    home = ""
    inspect: list[str] = []
    rc: int | None = None
    files: dict[str, RemoteFile] | None = None
    manifest: dict[str, Any] | None = None
    for line in text.splitlines():
        kind, _, rest = line.partition("\t")
        if kind == "home":
            home = rest
        elif kind == "inspect":
            inspect.append(rest)
        elif kind == "inspect-exit":
            rc = int(rest) if rest.strip().isdigit() else 1
        elif kind == "file":
            f = _file(rest)
            if f is not None:
                files = files if files is not None else {}
                files[f.path] = f
        elif kind == "manifest":
            try:
                loaded = json.loads(rest)
            except json.JSONDecodeError:
                loaded = None
            manifest = loaded if isinstance(loaded, dict) else None
    if rc is None:
        return Probe(home, docker_error="no answer from docker image inspect")
    want, current, error = _images(inspect, rc, ref, moving)
    if files is None and manifest is not None:
        files = {}
    return Probe(home, error, want, current, files, manifest)


def _file(rest: str) -> RemoteFile | None:
    parts = rest.split("\t")
    if len(parts) != 6 or parts[1] not in ("f", "l"):
        return None
    path, kind, size, mtime, mode, link = parts
    try:
        return RemoteFile(path, kind, int(size), int(float(mtime)), int(mode, 8), link)
    except ValueError:
        return None
