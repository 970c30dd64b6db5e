"""Stand-in for `dgxcluster build` (issue 3) in start/stop end-to-end tests and the start
benchmark.

Builds the testbed image on every node under the exact content tag `start`'s preflight
expects (`image_refs(...)[0]`), by streaming the build context as a tar over SSH into
`docker build`. Layer-cached: a second call with an unchanged context is a no-op.
When `dgxcluster build` is on main, replace `ensure_image` with a call to it.
"""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

from dgxcluster.build.context import image_refs, scan
from dgxcluster.inventory import load_inventory
from dgxcluster.remote.command import shell
from dgxcluster.remote.connection import Connection
from dgxcluster.session import Session


def _context_tar(inv_path: str) -> tuple[str, str, bytes]:
    inv = load_inventory(inv_path)
    root = inv.local_path(inv.image.context)
    ctx = scan(root, inv.image.dockerfile, inv.image.build_args)
    ref, moving = image_refs(inv.image.name, ctx)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for f in ctx.files:
            tar.add(str(root / f.path), arcname=f.path, recursive=False)
    return ref, moving, buf.getvalue()


def ensure_image(inventory: str | Path) -> str:
    """Make sure every node has the expected image tag; returns the tag."""
    ref, moving, data = _context_tar(str(inventory))

    def one(conn: Connection) -> None:
        if conn.run(["docker", "image", "inspect", ref], timeout=60).ok:
            return
        script = ('d=$(mktemp -d) && trap \'rm -rf "$d"\' EXIT && tar -x -C "$d" && '
                  'DOCKER_BUILDKIT=1 docker build -q -t "$1" -t "$2" "$d"')
        conn.run(shell(script, ref, moving), stdin=data, timeout=900).check()

    with Session.open(load_inventory(inventory), command="test-image") as s:
        s.cluster.map(one).raise_for_failures("build testbed image")
    return ref
