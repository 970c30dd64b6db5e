"""What a node holds of a pulled image, in one round trip (a fact: a script plus a parser).

For `image.source: pull`, `build` asks every node about three names at once: the reference
pulled (`nvcr.io/nvidia/vllm:26.10-py3`), dgxcluster's tag for it (`<name>:pull-<hex>`) and
`<name>:current`, each with its image ID; plus the node's $HOME and its record. The script
prints tab-separated records:
  home <TAB> $HOME
  image <TAB> ref|want|current <TAB> docker's exit status <TAB> "<id> <repo digests JSON>" or
        docker's complaint (its first non-empty line: with --format, docker 20.10 prints an
        empty line for a missing image before its error)
  record <TAB> the node's image record (JSON on one line), if there is one
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from dgxcluster.image.records import ImageRecord
from dgxcluster.remote.command import shell

#: $1 pulled ref ("" when it cannot be a local name), $2 want, $3 current, $4 record file
#: (may start with ~/).
SCRIPT = r"""rec=$4
case $rec in "~/"*) rec=$HOME/${rec#"~/"} ;; esac
printf 'home\t%s\n' "$HOME"
one() {
  [ -n "$2" ] || return 0
  out=$(docker image inspect --format '{{.Id}} {{json .RepoDigests}}' "$2" 2>&1); rc=$?
  printf 'image\t%s\t%s\t%s\n' "$1" "$rc" "$(printf '%s\n' "$out" | grep -m 1 .)"
}
one ref "$1"; one want "$2"; one current "$3"
if [ -f "$rec" ]; then printf 'record\t'; tr -d '\n' < "$rec"; echo; fi
"""


@dataclass(frozen=True)
class Held:
    """One name on one node: its image ID (None: absent) and the repo digests docker keeps."""

    id: str | None = None
    digests: tuple[str, ...] = ()


@dataclass(frozen=True)
class PullProbe:
    home: str = ""
    docker_error: str | None = None
    ref: Held = Held()
    want: Held = Held()
    current: Held = Held()
    record: ImageRecord | None = None

    def holds(self, image_id: str) -> bool:
        """Does the node hold this image under any of the three names?"""
        return image_id in (self.ref.id, self.want.id, self.current.id)

    def up_to_date(self, image_id: str, ref_taggable: bool) -> bool:
        """`want` and `current` (and the pulled name, where it can be a tag) are this image."""
        return (self.want.id == image_id and self.current.id == image_id
                and (self.ref.id == image_id or not ref_taggable))


def argv(ref: str | None, want: str, moving: str, record_file: str) -> list[str]:
    return shell(SCRIPT, ref or "", want, moving, record_file)


def _absent(text: str) -> bool:
    """docker's "No such image: X" (`Error: No such image`, `Error response from daemon: no
    such image: X: No such image: X`, older `No such object`)."""
    return re.search(r"No such (?:image|object)", text, re.IGNORECASE) is not None


def _held(rc: str, text: str) -> Held | str:
    """A name's answer, or docker's complaint when it is not just absent."""
    if rc == "0":
        image_id, _, digests = text.partition(" ")
        try:
            parsed = json.loads(digests) if digests.strip() else []
        except json.JSONDecodeError:
            parsed = []
        shas = tuple(str(d) for d in parsed) if isinstance(parsed, list) else ()
        if image_id.startswith("sha256:"):
            return Held(image_id, shas)
        return f"unexpected answer from docker image inspect: {text[:200]}"
    if _absent(text):
        return Held()
    return text.strip() or f"docker image inspect exited {rc}"


def parse(text: str) -> PullProbe:
    """Pure; a line it cannot read leaves that name unknown, never raises."""
    home, record = "", None
    held: dict[str, Held] = {}
    error: str | None = None
    answered = False
    for line in text.splitlines():
        kind, _, rest = line.partition("\t")
        if kind == "home":
            home = rest
        elif kind == "image":
            which, _, tail = rest.partition("\t")
            rc, _, said = tail.partition("\t")
            answered = True
            got = _held(rc, said)
            if isinstance(got, str):
                error = error or got
            else:
                held[which] = got
        elif kind == "record":
            record = ImageRecord.from_json(rest)
    if not answered:
        error = "no answer from docker image inspect"
    if error is not None:
        return PullProbe(home, docker_error=error, record=record)
    return PullProbe(home, None, held.get("ref", Held()), held.get("want", Held()),
                     held.get("current", Held()), record)
