"""Build the testbed image on one testbed node, for tests that need it before `dgxcluster build`
exists on main. TODO(lead): switch callers to `dgxcluster build` once issue 3 is merged.

Tars `images/testbed` (wheels fetched on the host first) and streams it into
`docker build` on the node over SSH; docker's layer cache makes repeats fast.
"""

from __future__ import annotations

import io
import subprocess
import tarfile

from dgxcluster.build.context import image_refs, scan
from dgxcluster.remote.command import with_env
from dgxcluster.session import Session
from tests.conftest import REPO


def build_image(session: Session, node: str) -> str:
    inv = session.inventory
    context = inv.local_path(inv.image.context)
    if not (context / "wheels").is_dir() and (context / "fetch-wheels").exists():
        subprocess.run([str(context / "fetch-wheels")], check=True, capture_output=True,
                       timeout=900, cwd=str(REPO))
    ctx = scan(context, inv.image.dockerfile, inv.image.build_args)
    ref = image_refs(inv.image.name, ctx)[0]
    conn = session.cluster.conn(node)
    if conn.run(["docker", "image", "inspect", ref]).exit_code == 0:
        return ref
    buf = io.BytesIO()
    # GNU format, Dockerfile first: docker sniffs the first header to tell a tar from a Dockerfile
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for f in sorted(ctx.files, key=lambda f: f.path != inv.image.dockerfile):
            tar.add(str(context / f.path), arcname=f.path, recursive=False)
    args = [a for k, v in inv.image.build_args.items() for a in ("--build-arg", f"{k}={v}")]
    if inv.image.dockerfile != "Dockerfile":
        args += ["-f", inv.image.dockerfile]  # a path inside the tar context
    conn.run(with_env({"DOCKER_BUILDKIT": "1"}, ["docker", "build", "-q", "-t", ref, *args, "-"]),
             stdin=buf.getvalue(), timeout=900).check()
    return ref
