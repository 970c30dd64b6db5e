"""What `docker pull REF` prints: layers, digest, status, errors (the argv, with the login
around it, is `image.dockercmd.pull_argv`).

docker/cli `cli/command/image/pull.go`: `docker pull [-q] [--platform P] [-a] NAME[:TAG|@DIGEST]`;
with no tag it prints `Using default tag: latest`; then the daemon's JSON stream as
`jsonmessage` prints it without a terminal (progress-bar messages are dropped, the rest
is `ID: Status`): `TAG: Pulling from REPO`, per layer `Pulling fs layer`, `Waiting`,
`Verifying Checksum`, `Download complete`, `Pull complete` or `Already exists`; then
`Digest: sha256:...`, `Status: Downloaded newer image for REF` or `Status: Image is up to
date for REF` (moby `distribution/pull.go` `writeStatus`), and last the full reference.
`-q` would print only that reference; dgxcluster keeps the lines for its progress. A
failure is `Error response from daemon: ...` on stderr, exit 1. `--platform` is not passed:
the daemon pulls its own platform (linux/arm64 on a DGX Spark).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_LAYER = re.compile(r"^([0-9a-f]{12}): (.+?)\s*$")
_PULLING = re.compile(r"^(\S+): Pulling from (\S+)\s*$")
_DIGEST = re.compile(r"^Digest: (sha256:[0-9a-f]{64})\s*$")
_STATUS = re.compile(r"^Status: (Downloaded newer image|Image is up to date) for (\S+)\s*$")
DONE_STATES = ("Pull complete", "Already exists")


@dataclass
class PullProgress:
    """The layers seen so far, each with its last state (fed line by line)."""

    layers: dict[str, str] = field(default_factory=dict)

    def feed(self, line: str) -> bool:
        """Take one output line; True if it moved a layer on."""
        m = _LAYER.match(line)
        if m is None:
            return False
        self.layers[m.group(1)] = m.group(2)
        return True

    @property
    def done(self) -> int:
        return sum(1 for s in self.layers.values() if s in DONE_STATES)

    @property
    def present(self) -> int:
        """Layers the node already held ("Already exists")."""
        return sum(1 for s in self.layers.values() if s == "Already exists")

    def describe(self) -> str:
        return f"pulling: {self.done}/{len(self.layers)} layer(s)" if self.layers else "pulling"


@dataclass(frozen=True)
class Pulled:
    """What one `docker pull` said. `error` is set when it did not end in a Status line."""

    digest: str | None = None
    updated: bool | None = None  # True: "Downloaded newer image"; False: "Image is up to date"
    reference: str | None = None  # the last line: the full reference docker pulled
    layers: int = 0
    present: int = 0  # of those, "Already exists"
    error: str | None = None


def parse(text: str) -> Pulled:
    """Pure: the whole output (stdout and stderr merged) of one `docker pull`."""
    progress = PullProgress()
    digest = reference = None
    updated: bool | None = None
    errors: list[str] = []
    lines = [ln.rstrip() for ln in text.splitlines() if ln.strip()]
    for i, line in enumerate(lines):
        if progress.feed(line) or _PULLING.match(line) or line.startswith("Using default tag:"):
            continue
        if (m := _DIGEST.match(line)) is not None:
            digest = m.group(1)
        elif (m := _STATUS.match(line)) is not None:
            updated = m.group(1) == "Downloaded newer image"
            if i + 1 < len(lines) and " " not in lines[i + 1]:
                reference = lines[i + 1]
        elif line.startswith(("Error", "error", "docker:")) or "denied" in line:
            errors.append(line)
    error = None
    if updated is None:
        error = errors[-1] if errors else (lines[-1] if lines else "docker pull printed nothing")
    return Pulled(digest, updated, reference, len(progress.layers), progress.present, error)
