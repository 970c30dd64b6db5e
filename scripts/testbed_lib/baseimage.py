"""A Debian base image made locally with mmdebstrap: no registry needed, cached by content."""

from __future__ import annotations

import fcntl
import hashlib
import sys
from pathlib import Path

from testbed_lib.layout import CACHE
from testbed_lib.sh import TestbedError, run

#: What the testbed's own image (images/testbed, the inventory's image.context) needs beyond
#: the base: the Python wheels its Dockerfile installs with no network on the nodes.
FETCH_WHEELS = Path(__file__).resolve().parents[2] / "images" / "testbed" / "fetch-wheels"

SUITE = "bookworm"
PACKAGES = ("python3", "python3-venv", "iproute2", "procps", "iputils-ping", "curl",
            "ca-certificates", "tini")
DPKG_EXCLUDES = ("path-exclude=/usr/share/doc/*", "path-exclude=/usr/share/man/*",
                 "path-exclude=/usr/share/locale/*", "path-exclude=/usr/share/info/*")
REPO = "dgxcluster/testbed-base"


def digest() -> str:
    h = hashlib.sha256(repr((SUITE, PACKAGES, DPKG_EXCLUDES)).encode()).hexdigest()
    return h[:12]


def tags() -> list[str]:
    return [f"{REPO}:{SUITE}-{digest()}", f"{REPO}:{SUITE}"]


def ensure_rootfs() -> Path:
    """Build (once) the root filesystem tarball the base image is imported from."""
    CACHE.mkdir(parents=True, exist_ok=True)
    tar = CACHE / f"debian-{SUITE}-{digest()}.tar"
    with open(CACHE / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if tar.exists():
            return tar
        print(f"testbed: making the Debian {SUITE} base with mmdebstrap (once, ~30 s)",
              file=sys.stderr)
        tmp = tar.with_suffix(".tmp.tar")
        argv = ["mmdebstrap", "--quiet", "--variant=minbase", f"--include={','.join(PACKAGES)}"]
        argv += [f"--dpkgopt={o}" for o in DPKG_EXCLUDES]
        argv += [SUITE, str(tmp)]
        run(argv, timeout=1200)
        tmp.rename(tar)
    return tar


def ensure_image_inputs() -> None:
    """Fetch (once; cached after) what `dgxcluster build` of the testbed image needs, so that
    `up --docker` then `build` works with nothing else run by hand."""
    proc = run([str(FETCH_WHEELS)], check=False, timeout=1800)
    if proc.returncode != 0:
        raise TestbedError(
            f"{FETCH_WHEELS.relative_to(FETCH_WHEELS.parents[2])} failed (it needs PyPI once, "
            f"then works from /var/cache/dgxtb/wheels): {(proc.stderr or proc.stdout).strip()}")
