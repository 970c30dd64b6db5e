"""The one shipper of node-side programs: one content-addressed bundle, put only when missing,
one round trip when present; and the bundle's own rules (stdlib only, no dgxcluster import)."""

from __future__ import annotations

import ast
import io
import sys
import zipfile
from pathlib import Path

from dgxcluster.core import ship
from dgxcluster.core.nodepaths import NodePaths
from dgxcluster.nodeside.__main__ import PROGRAMS
from dgxcluster.remote.result import Result
from tests import nodeside
from tests.fakes import FakeConnection, Reply

PATHS = NodePaths("/home/u", "~/.local/state/dgxcluster", "c")
PYZ = f"/home/u/.local/state/dgxcluster/c/bin/nodeside-{ship.digest()}.pyz"
NODESIDE = Path(ship.__file__).resolve().parents[1] / "nodeside"


def test_the_bundle_is_named_by_its_content_and_built_the_same_every_time() -> None:
    data = ship.bundle()
    ship.bundle.cache_clear()
    assert ship.bundle() == data  # stored, fixed timestamps: the same bytes again
    assert ship.path(PATHS) == PYZ
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        names = zf.namelist()
        assert names[0] == "__main__.py"
        assert {f"nodeside/{p}.py" for p in PROGRAMS} <= set(names)
        assert "nodeside/framing.py" in names
        assert {i.date_time for i in zf.infolist()} == {(1980, 1, 1, 0, 0, 0)}
    assert ship.argv(PYZ, "relay", "send") == ["python3", PYZ, "relay", "send"]


def test_present_costs_one_round_trip_and_no_put() -> None:
    conn = FakeConnection("n1")  # the check answers 0: present
    assert ship.ensure(conn, PATHS) == PYZ
    assert len(conn.calls) == 1 and conn.files == {}
    assert conn.calls[0][-1] == PYZ and "rm -f" in conn.calls[0][2]  # leftovers go if absent


def test_missing_is_put_once_with_its_content() -> None:
    conn = FakeConnection("n1").on(r"\[ -f", Reply(exit_code=1))
    ship.ensure(conn, PATHS)
    assert conn.files == {PYZ: ship.bundle()} and conn.modes[PYZ] == 0o644


def test_run_ships_only_when_python_cannot_open_the_bundle() -> None:
    missing = f"python3: can't open file '{PYZ}': [Errno 2] No such file or directory\n"
    answers = iter([Reply(exit_code=2, stderr=missing), Reply(stdout="{}\n")])
    conn = FakeConnection("n1").on(r"\[ -f", Reply(exit_code=1)).on(
        "hfcache", lambda argv, stdin: next(answers))
    res = ship.run(conn, PATHS, "hfcache", "scan", stdin=b"x")
    assert res.ok and res.stdout == "{}\n"
    assert [c[2] for c in conn.calls if c[0] == "python3"] == ["hfcache", "hfcache"]
    assert conn.files == {PYZ: ship.bundle()} and conn.stdins[-1] == b"x"

    present = FakeConnection("n2").on("hfcache", Reply(stdout="{}\n"))
    assert ship.run(present, PATHS, "hfcache", "scan").ok
    assert len(present.calls) == 1 and present.files == {}


def test_a_program_failing_on_its_own_is_not_mistaken_for_a_missing_bundle() -> None:
    conn = FakeConnection("n1").on("", Reply(exit_code=2, stderr="model-agent scan: bad path\n"))
    assert ship.run(conn, PATHS, "hfcache", "scan").exit_code == 2
    assert len(conn.calls) == 1 and conn.files == {}


def test_the_dispatcher_names_the_programs() -> None:
    res = nodeside.run("nope")
    assert res.returncode == 2 and b"relay, hfcache, layerfilter, nccl_probe" in res.stderr


def _imports(path: Path) -> set[tuple[int, str]]:
    """(relative level, top-level module) of every import in a file."""
    found: set[tuple[int, str]] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {(0, a.name.split(".")[0]) for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            found.add((node.level, (node.module or "").split(".")[0]))
    return found


def test_node_side_programs_import_only_the_standard_library_and_each_other() -> None:
    allowed_extra = {"nccl_probe.py": {"torch"}, "nccl_libs.py": {"torch"}}  # the container's torch
    files = sorted(NODESIDE.glob("*.py"))
    assert len(files) >= 6
    for f in files:
        for level, mod in _imports(f):
            if level:  # `from . import framing`
                continue
            ok = mod in sys.stdlib_module_names or mod in allowed_extra.get(f.name, set())
            assert ok, f"{f.name} imports {mod}"


def test_a_missing_bundle_under_a_state_dir_with_a_quote_is_recognised() -> None:
    """Python writes the file name as repr() does: `'` comes back as `\\'` (seen on the
    testbed with the hostile inventory's state dir), so the full path is not in stderr."""
    pyz = "dgxc state;$(x) 'q\" ü/c/bin/" + ship.name()
    err = (f"python3: can't open file '/root/dgxc state;$(x) \\'q\" ü/c/bin/{ship.name()}': "
           "[Errno 2] No such file or directory\n")
    assert ship.missing(Result("n", "python3 ...", 2, "", err, 0.0), pyz)
    assert not ship.missing(Result("n", "python3 ...", 2, "", "usage: clusterlock\n", 0.0), pyz)
