"""The one way dgxcluster's node-side programs reach a node: the `dgxcluster.nodeside`
package as one zipapp, named by its content's hash, put only when missing.

A node runs a program as `python3 <root>/bin/nodeside-<sha256[:12]>.pyz PROGRAM ARGS`
(`nodeside/__main__.py` dispatches). The name is the content's hash, so a changed bundle
never meets an old copy and a node that holds this one needs nothing sent. Two ways in,
one file:
- `ensure(conn, paths)`: one round trip (`[ -f ]`) when present, a put when not. For
  programs started with a stdin payload (the relay agents), which a failed first try
  would spend;
- `run(conn, paths, PROGRAM, ...)`: runs at once and puts the bundle only when python3
  could not open it: no extra round trip when present. For one-shot programs (hfcache).
  `home_path` + `missing` + `put_at` do the same for a program started with
  `Connection.start` (the cluster lock), without asking the node for $HOME: a session's
  commands start in the login user's home, where a home-relative path resolves.
"""

from __future__ import annotations

import functools
import hashlib
import io
import zipfile
from importlib import resources

from dgxcluster.core.nodepaths import BIN_DIR, NodePaths, home_relative
from dgxcluster.remote.command import Arg, shell
from dgxcluster.remote.connection import Connection
from dgxcluster.remote.result import Result

#: The zipapp's entry point: the package's own dispatcher.
_MAIN = b"from nodeside.__main__ import main\nraise SystemExit(main())\n"
#: Present? If not, remove what an unfinished earlier put left (a node that stopped answering
#: mid-write keeps its `<path>.tmp-*`), in the same round trip.
_CHECK = '[ -f "$1" ] || { rm -f -- "$1".tmp-*; exit 1; }'
CHECK_TIMEOUT_S = 30.0


@functools.cache
def bundle() -> bytes:
    """The zipapp's bytes: the same on every machine for the same sources (stored, not
    compressed, with fixed timestamps), so its hash names its content."""
    pkg = resources.files("dgxcluster.nodeside")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        _add(zf, "__main__.py", _MAIN)
        for name in sorted(p.name for p in pkg.iterdir() if p.name.endswith(".py")):
            _add(zf, f"nodeside/{name}", pkg.joinpath(name).read_bytes())
    return buf.getvalue()


def _add(zf: zipfile.ZipFile, name: str, data: bytes) -> None:
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    info.external_attr = 0o644 << 16
    zf.writestr(info, data)


def digest() -> str:
    return hashlib.sha256(bundle()).hexdigest()[:12]


def name() -> str:
    return f"nodeside-{digest()}.pyz"


def path(paths: NodePaths) -> str:
    """Where the bundle lives on a node (absolute)."""
    return paths.bin_file(name())


def home_path(state_dir: str, cluster: str) -> str:
    """The same place, relative to the login user's home when under `~` (no round trip)."""
    return home_relative(state_dir, cluster, BIN_DIR, name())


def missing(res: Result, pyz: str) -> bool:
    """Did the program not run because the node lacks the bundle? Python names the file as
    repr() writes it (a quote in the state dir comes back as \\'), so the bundle's own name,
    which is plain, is what is looked for."""
    return (res.exit_code == 2 and "can't open file" in res.stderr
            and pyz.rsplit("/", 1)[-1] in res.stderr)


def argv(pyz: str, program: str, *args: Arg) -> list[Arg]:
    return ["python3", pyz, program, *args]


def ensure(conn: Connection, paths: NodePaths) -> str:
    """The bundle's path on the node, put there first if missing."""
    pyz = path(paths)
    if conn.run(shell(_CHECK, pyz), timeout=CHECK_TIMEOUT_S).exit_code != 0:
        put_at(conn, pyz)
    return pyz


def put_at(conn: Connection, pyz: str) -> None:
    """Put the bundle at `pyz` (absolute, or relative to the login user's home)."""
    try:
        conn.put(bundle(), pyz, mode=0o644)
    except OSError:
        # another run shipping the same file at once may have removed our temporary
        # file as a leftover: fine if its copy landed
        if conn.run(["test", "-f", pyz], timeout=CHECK_TIMEOUT_S).exit_code != 0:
            raise


def run(conn: Connection, paths: NodePaths, program: str, *args: str,
        stdin: bytes | None = None, timeout: float | None = None) -> Result:
    """Run a program from the bundle; ship the bundle first only if the node lacks it."""
    pyz = path(paths)
    cmd = argv(pyz, program, *args)
    res = conn.run(cmd, stdin=stdin, timeout=timeout)
    if missing(res, pyz):
        ensure(conn, paths)
        res = conn.run(cmd, stdin=stdin, timeout=timeout)
    return res
