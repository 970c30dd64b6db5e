"""The docker command lines `build` runs, built as argv (pure; unit-tested without docker).

BuildKit is asked for explicitly (`DOCKER_BUILDKIT=1`): it is what gives secret mounts,
cache mounts and line-oriented `--progress=plain` output on Docker 20.10 and later alike.
Secrets reach `docker build` only as `--secret id=NAME,src=FILE` (a 0600 file), never as a
build argument, which would be stored in the image's history.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from dgxcluster.remote.command import shell


def build_argv(
    *,
    context_dir: str,
    dockerfile: str,
    tags: list[str],
    labels: Mapping[str, str],
    build_args: Mapping[str, str],
    secret_files: Mapping[str, str],
    no_cache: bool = False,
    cache_from: list[str] | None = None,
) -> list[str]:
    """The `docker build` line. Images carry their layer cache inline, and the node's previous
    `current` is offered as cache: an image that arrived by `distribute` (no local build
    history) still spares the next `each` build the steps that did not change."""
    argv = ["env", "DOCKER_BUILDKIT=1", "docker", "build", "--progress=plain",
            "-f", f"{context_dir}/{dockerfile}", "--build-arg", "BUILDKIT_INLINE_CACHE=1"]
    for ref in cache_from or []:
        argv += ["--cache-from", ref]
    for tag in tags:
        argv += ["-t", tag]
    for key, value in sorted(labels.items()):
        argv += ["--label", f"{key}={value}"]
    for key, value in sorted(build_args.items()):
        argv += ["--build-arg", f"{key}={value}"]
    for name, path in sorted(secret_files.items()):
        argv += ["--secret", f"id={name},src={path}"]
    if no_cache:
        argv.append("--no-cache")
    argv.append(context_dir)
    return argv


#: $1 content ref, $2 moving ref, $3 expected image id, $4 record dir, $5 record file.
#: stdin: the record (JSON). Writes it only if the image is the one expected.
FINALIZE = r"""ref=$1 cur=$2 want=$3 rdir=$4 rec=$5
id=$(docker image inspect --format '{{.Id}}' "$ref") || exit 1
if [ "$id" != "$want" ]; then
  echo "dgxcluster: image id mismatch: $ref is $id here, expected $want" >&2; exit 9
fi
docker tag "$ref" "$cur" || exit 1
mkdir -p "$rdir" && cat > "$rec.tmp" && mv -f "$rec.tmp" "$rec" || exit 1
printf 'image-id\t%s\n' "$id"
"""

EXIT_ID_MISMATCH = 9


def finalize_argv(ref: str, moving: str, image_id: str, record_dir: str, record_file: str
                  ) -> list[str]:
    return shell(FINALIZE, ref, moving, image_id, record_dir, record_file)


#: $1 image id, $2 record dir, $3 record file, then the tags to point at that image.
#: stdin: the record (JSON). Nothing is tagged or written unless the image is here.
PIN = r"""id=$1 rdir=$2 rec=$3; shift 3
got=$(docker image inspect --format '{{.Id}}' "$id" 2>/dev/null)
if [ "$got" != "$id" ]; then
  was=$(docker image inspect --format '{{.Id}}' "$1" 2>&1 | grep -m 1 .)
  echo "dgxcluster: image id mismatch: expected $id here; $1 is: $was" >&2; exit 9
fi
for t in "$@"; do docker tag "$id" "$t" || exit 1; done
mkdir -p "$rdir" && cat > "$rec.tmp" && mv -f "$rec.tmp" "$rec" || exit 1
printf 'image-id\t%s\n' "$id"
"""


def pin_argv(image_id: str, record_dir: str, record_file: str, tags: list[str]) -> list[str]:
    """Point `tags` at the image with this ID (checked first: the same bytes as the source's)
    and write the node's record: how a pulled image gets its names on each node."""
    return shell(PIN, image_id, record_dir, record_file, *tags)


#: $1 the reference, $2 the registry to log in to ("" = Docker Hub), $3 the user ("" = no
#: login: the node's own docker credentials apply). stdin: the password, when logging in.
#: The login lives in a fresh DOCKER_CONFIG removed on exit, so no credential stays on the
#: node; the password only ever travels on stdin (`docker login --password-stdin`).
PULL = r"""ref=$1 reg=$2 user=$3
if [ -n "$user" ]; then
  cfg=$(mktemp -d) || exit 1
  trap 'rm -rf "$cfg"' EXIT
  trap 'rm -rf "$cfg"; exit 130' HUP INT TERM
  export DOCKER_CONFIG="$cfg"
  set -- --username "$user" --password-stdin
  [ -z "$reg" ] || set -- "$@" "$reg"
  docker login "$@" >/dev/null || { echo "dgxcluster: docker login ${reg:-(Docker Hub)} failed" >&2; exit 3; }
  echo "dgxcluster: logged in to ${reg:-Docker Hub} as $user (for this pull only)"
fi
docker pull "$ref" 2>&1 || exit $?
out=$(docker image inspect --format '{{.Id}} {{json .RepoDigests}}' "$ref") || exit 1
printf 'image-id\t%s\n' "$out"
"""
EXIT_LOGIN = 3
PULLED_PREFIX = "image-id\t"


def pull_argv(ref: str, registry: str | None, user: str | None) -> list[str]:
    """`docker pull ref` (after a login kept to this command, when `user` is given), then the
    image ID and repo digests it gave, as `image-id<TAB>ID JSON`."""
    return shell(PULL, ref, registry or "", user or "")


def save_argv(ref: str) -> list[str]:
    return ["docker", "save", ref]


def load_argv() -> list[str]:
    return ["docker", "load"]


_BUILDKIT_DIGEST = re.compile(r"^#\d+ sha256:[0-9a-f]{64}$")
_BUILDKIT_STEP = re.compile(r"^#\d+ \[(?:[\w.-]+ )?(\d+)/(\d+)\] (.*)$")
_LEGACY_STEP = re.compile(r"^Step (\d+)/(\d+) : (.*)$")


def step_of(line: str) -> str | None:
    """'step 3/6: RUN pip install …' from a BuildKit (plain) or classic builder line."""
    m = _BUILDKIT_STEP.match(line) or _LEGACY_STEP.match(line)
    if m is None:
        return None
    text = m.group(3)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"step {m.group(1)}/{m.group(2)}: {text}"


def is_noise(line: str) -> bool:
    """BuildKit's per-step digest lines: kept in the log, not worth a line on screen."""
    return _BUILDKIT_DIGEST.match(line) is not None
