"""Synthetic Hugging Face cache entries, laid out exactly as huggingface_hub writes them.

`models--org--name/{blobs,snapshots/<commit>,refs/main}`: large files are blobs named by
their sha256 (as LFS/Xet files are), small ones by their git blob sha1; snapshot files are
relative symlinks into blobs; `refs/main` holds the commit hash. `BUILD_SCRIPT` builds one
on a node (stdlib only, run with `python3 -c`), so big test models never cross the operator.
"""

from __future__ import annotations

import json

# argv: hub_dir, spec_json. spec: {"repo": "org/name", "commit": 40 hex, "ref": "main",
#   "files": {"path/in/repo": size_or_text}, "seed": int, "lfs_min": bytes}
BUILD_SCRIPT = r"""
import hashlib, json, os, random, sys
hub, spec = sys.argv[1], json.loads(sys.argv[2])
root = os.path.join(hub, "models--" + spec["repo"].replace("/", "--"))
blobs = os.path.join(root, "blobs")
os.makedirs(blobs, exist_ok=True)
rng = random.Random(spec.get("seed", 0))
snap = os.path.join(root, "snapshots", spec["commit"])
out = {}
for rel, what in sorted(spec["files"].items()):
    if isinstance(what, str):
        data = what.encode()
        chunks = [data]
        size = len(data)
    else:
        size = what
        chunks = None
    lfs = size >= spec.get("lfs_min", 1 << 20)
    tmp = os.path.join(blobs, ".building")
    h = hashlib.sha256() if lfs else hashlib.sha1()
    if not lfs:
        h.update(b"blob %d\0" % size)
    with open(tmp, "wb") as fh:
        if chunks is None:
            left = size
            while left:
                n = min(left, 1 << 22)
                block = rng.randbytes(n)
                h.update(block)
                fh.write(block)
                left -= n
        else:
            for c in chunks:
                h.update(c)
                fh.write(c)
    name = h.hexdigest()
    os.replace(tmp, os.path.join(blobs, name))
    link = os.path.join(snap, rel)
    os.makedirs(os.path.dirname(link), exist_ok=True)
    if os.path.lexists(link):
        os.unlink(link)
    os.symlink(os.path.relpath(os.path.join(blobs, name), os.path.dirname(link)), link)
    out[rel] = name
os.makedirs(os.path.join(root, "refs"), exist_ok=True)
with open(os.path.join(root, "refs", spec.get("ref", "main")), "w") as fh:
    fh.write(spec["commit"])
print(json.dumps(out))
"""


def spec(repo: str, files: dict[str, int | str], *, commit: str = "a" * 40, ref: str = "main",
         seed: int = 0, lfs_min: int = 1 << 20) -> str:
    return json.dumps({"repo": repo, "commit": commit, "ref": ref, "files": files, "seed": seed,
                       "lfs_min": lfs_min})


def build_argv(hub: str, spec_json: str) -> list[str]:
    return ["python3", "-c", BUILD_SCRIPT, hub, spec_json]
