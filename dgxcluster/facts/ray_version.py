"""Does an image have Ray? `ray --version` run in it (as the image's own PATH finds `ray`).

Ray's CLI is a click group with click's default version option, so it prints
`ray, version 2.57.1` (exit 0). An image without Ray fails to start the command: the
runtime's `exec: "ray": executable file not found in $PATH` (docker run exit 127). NGC's
vLLM containers ship without Ray (NVIDIA's playbook pip-installs it at start).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

ARGS = ["--version"]
ENTRYPOINT = "ray"
_VERSION = re.compile(r"^ray, version (\S+)", re.MULTILINE)
_MISSING = ('exec: "ray": executable file not found', 'exec: "ray": stat')


@dataclass(frozen=True)
class RayVersion:
    version: str | None = None  # set: Ray is there
    missing: bool = False  # the image has no `ray` on its PATH
    error: str | None = None  # neither: could not tell (docker failed otherwise)


def parse(text: str, exit_code: int) -> RayVersion:
    m = _VERSION.search(text)
    if exit_code == 0 and m is not None:
        return RayVersion(version=m.group(1))
    if any(s in text for s in _MISSING):  # exit 127 alone could be a node without docker
        return RayVersion(missing=True)
    last = next((ln.strip() for ln in reversed(text.splitlines()) if ln.strip()), "")
    return RayVersion(error=f"`ray --version` in the image exited {exit_code}: "
                            f"{last or 'no output'}")
