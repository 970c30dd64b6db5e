"""Which image layers the receiving nodes already hold, so `distribute` ships only the rest.

Docker identifies a stack of layers by its chain ID (diffIDs folded with sha256), and
`docker load` skips every layer whose chain ID it already has. So the bottom of the new
image that every receiver holds (typically the ~30 GB NGC base) need not travel at all;
`nodeside/layerfilter.py` (in the node-side bundle, `core.ship`) leaves those layer files out
of the `docker save` stream on the source.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence

from dgxcluster.remote.command import shell

#: $1 the image to send (layers printed as "want <json>" if present here), then
#: "have <json>" for every local image.
SCRIPT = r"""fmt='{{json .RootFS.Layers}}'
if out=$(docker image inspect --format "$fmt" "$1" 2>/dev/null); then printf 'want\t%s\n' "$out"; fi
docker image ls -q --no-trunc | sort -u | xargs -r docker image inspect --format "$fmt" 2>/dev/null \
  | awk '{ print "have\t" $0 }'
"""


def argv(ref: str) -> list[str]:
    return shell(SCRIPT, ref)


def chain_ids(diff_ids: Sequence[str]) -> list[str]:
    """Docker's chain IDs: chain[0] = diff[0]; chain[n] = sha256(chain[n-1] + " " + diff[n])."""
    out: list[str] = []
    for d in diff_ids:
        if not out:
            out.append(d)
        else:
            out.append("sha256:" + hashlib.sha256(f"{out[-1]} {d}".encode()).hexdigest())
    return out


def parse(text: str) -> tuple[list[str] | None, set[str]]:
    """(the wanted image's diffIDs or None, chain IDs held)."""
    want: list[str] | None = None
    held: set[str] = set()
    for line in text.splitlines():
        kind, _, rest = line.partition("\t")
        try:
            layers = json.loads(rest)
        except ValueError:
            continue
        if not isinstance(layers, list) or not all(isinstance(x, str) for x in layers):
            continue
        if kind == "want":
            want = list(layers)
        elif kind == "have":
            held.update(chain_ids(layers))
    return want, held


def skippable(source_layers: Sequence[str], held_by_each: Iterable[set[str]]) -> list[str]:
    """diffIDs of the longest bottom stack that every receiver holds.

    A diffID that also occurs above that stack is kept: `docker save` may store the second
    occurrence as a link to the first file, which must then travel.
    """
    held = list(held_by_each)
    if not held:
        return []
    chains = chain_ids(source_layers)
    n = 0
    while n < len(chains) and all(chains[n] in h for h in held):
        n += 1
    above = set(source_layers[n:])
    return [d for d in dict.fromkeys(source_layers[:n]) if d not in above]
