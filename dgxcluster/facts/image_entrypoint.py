"""An image's ENTRYPOINT (`docker image inspect --format '{{json .Config.Entrypoint}}'`).

`start` hands `ray start ...` to the image as the container's arguments, so the ENTRYPOINT
must run the command it is given (dgxcluster's own `dgxcluster-entrypoint` and NGC's
`nvidia_entrypoint.sh` do; `ENTRYPOINT ["vllm", "serve"]` would not). Docker prints `null`
for an image without one, else a JSON list of strings.
"""

from __future__ import annotations

import json

#: Entrypoints known to run the command they are given (by file name).
PASS_THROUGH = ("dgxcluster-entrypoint", "nvidia_entrypoint.sh", "tini", "docker-entrypoint.sh")


def argv(image: str) -> list[str]:
    return ["docker", "image", "inspect", "--format", "{{json .Config.Entrypoint}}", image]


def parse(text: str) -> list[str] | None:
    """The ENTRYPOINT as a list ([] for none); None if the answer is not docker's JSON."""
    try:
        got = json.loads(text.strip() or "x")
    except ValueError:
        return None
    if got is None:
        return []
    if isinstance(got, list) and all(isinstance(x, str) for x in got):
        return got
    return None


def passes_through(entrypoint: list[str]) -> bool:
    """True where the command reaches a program that runs it: no ENTRYPOINT, or one of
    `PASS_THROUGH` first (tini's `--` then another entrypoint is judged by that one)."""
    rest = list(entrypoint)
    while rest and rest[0].rsplit("/", 1)[-1] == "tini":
        rest = rest[1:]
        if rest[:1] == ["--"]:
            rest = rest[1:]
    return not rest or rest[0].rsplit("/", 1)[-1] in PASS_THROUGH
