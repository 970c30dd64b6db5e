"""What a node holds for one image, learned in one round trip (a fact: a script plus a parser).

`build` asks every node this first, and does nothing more where the content tag is already
there: that is what keeps a no-op build under a second. `check.image_state` (for `start` and
`status`) asks the same question without the build-context listing.

The script prints tab-separated records:
  home <TAB> $HOME
  want|current <TAB> <image id> <TAB> <labels as JSON>   (or "-" when the tag is absent)
  docker-error <TAB> <first line of docker's complaint>  (daemon down, no permission)
  file <TAB> path <TAB> type <TAB> size <TAB> mtime <TAB> mode <TAB> link   (node's build context copy)
  manifest <TAB> <JSON written by the last context sync>
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from dgxcluster.naming import LABEL_CONTENT_TAG
from dgxcluster.remote.command import shell

#: $1 content ref, $2 moving ref, $3 state root (may start with ~), $4 build dir below it
#: ("" = do not list), $5 "1" = list even when the content tag is present (a forced rebuild).
SCRIPT = r"""ref=$1 cur=$2 root=$3 bdir=$4 force=$5
case $root in "~") root=$HOME ;; "~/"*) root=$HOME/${root#"~/"} ;; esac
printf 'home\t%s\n' "$HOME"
fmt='{{.Id}}	{{json .Config.Labels}}'
look() {
  if out=$(docker image inspect --format "$fmt" "$2" 2>&1); then
    printf '%s\t%s\n' "$1" "$out"
  else
    case $out in
      *"No such image"*|*"No such object"*) printf '%s\t-\n' "$1" ;;
      *) printf 'docker-error\t%s\n' "$(printf '%s' "$out" | tr '\n\t' '  ')"; return 1 ;;
    esac
  fi
}
look want "$ref" || exit 0
look current "$cur" || exit 0
[ -n "$bdir" ] || exit 0
if [ "$force" != 1 ] && docker image inspect --format x "$ref" >/dev/null 2>&1; then exit 0; fi
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


def _image(rest: str) -> ImageInfo | None:
    if rest.strip() == "-":
        return None
    image_id, _, labels_json = rest.partition("\t")
    labels: dict[str, str] = {}
    try:
        parsed = json.loads(labels_json) if labels_json.strip() else None
    except json.JSONDecodeError:
        parsed = None
    if isinstance(parsed, dict):
        labels = {str(k): str(v) for k, v in parsed.items()}
    return ImageInfo(image_id.strip(), labels)


def parse(text: str) -> Probe:
    """Parse the script's output; unknown or malformed lines are ignored, never fatal."""
    home = ""
    docker_error: str | None = None
    want: ImageInfo | None = None
    current: ImageInfo | None = None
    files: dict[str, RemoteFile] | None = None
    manifest: dict[str, Any] | None = None
    for line in text.splitlines():
        kind, _, rest = line.partition("\t")
        if kind == "home":
            home = rest
        elif kind == "docker-error":
            docker_error = rest.strip() or "docker failed"
        elif kind == "want":
            want = _image(rest)
        elif kind == "current":
            current = _image(rest)
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
    if files is None and manifest is not None:
        files = {}
    return Probe(home, docker_error, want, current, files, manifest)


def _file(rest: str) -> RemoteFile | None:
    parts = rest.split("\t")
    if len(parts) != 6 or parts[1] not in ("f", "l"):
        return None
    path, kind, size, mtime, mode, link = parts
    try:
        return RemoteFile(path, kind, int(size), int(float(mtime)), int(mode, 8), link)
    except ValueError:
        return None
