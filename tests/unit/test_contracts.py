"""The contracts that keep the code's shape (docs/DEVELOPING.md, "Which package may import which").

`lint-imports` checks the import contracts in pyproject.toml; ruff checks complexity (C901)
and printing (T20). These tests run them on the tree, and prove each one bites: a copy of
the package with one violation planted must be refused, naming the offending import.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "lint-imports"), "--no-cache"], cwd=root,
                          capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"})


def test_the_tree_keeps_every_import_contract() -> None:
    p = _lint_imports(REPO)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "0 broken" in p.stdout or "broken" not in p.stdout.split("Contracts:")[-1]


PLANTED = {
    # a capability importing another one
    "capabilities-independent": ("dgxcluster/status/report.py",
                                 "import dgxcluster.serving.stop  # planted\n",
                                 "dgxcluster.status.report -> dgxcluster.serving.stop"),
    # paramiko outside remote
    "ssh-only-in-remote": ("dgxcluster/core/steps.py", "import paramiko  # planted\n",
                           "dgxcluster.core.steps -> paramiko"),
    # the UI outside cli
    "ui-only-in-cli": ("dgxcluster/models/sync.py", "import rich  # planted\n",
                       "dgxcluster.models.sync -> rich"),
    # an upward import
    "layers": ("dgxcluster/remote/group.py", "import dgxcluster.core.steps  # planted\n",
               "dgxcluster.remote.group -> dgxcluster.core.steps"),
    # a node-side program reaching into the controller
    "nodeside-standalone": ("dgxcluster/nodeside/relay.py",
                            "import dgxcluster.errors  # planted\n",
                            "dgxcluster.nodeside.relay -> dgxcluster.errors"),
    # the controller importing a node-side program instead of shipping it
    "nodeside-as-files": ("dgxcluster/models/agent.py",
                          "import dgxcluster.nodeside.hfcache  # planted\n",
                          "dgxcluster.models.agent -> dgxcluster.nodeside.hfcache"),
}

#: More upward imports the layers contract refuses (vLLM's CLI tables sit above core, below
#: the capabilities): {name: (file, planted line, what lint-imports names)}.
UPWARD = {
    "vllmcli-imports-a-capability": ("dgxcluster/vllmcli/fit.py",
                                     "import dgxcluster.serving.plan  # planted\n",
                                     "dgxcluster.vllmcli.fit -> dgxcluster.serving.plan"),
    "core-imports-recipes": ("dgxcluster/core/imageid.py",
                             "import dgxcluster.recipes.catalog  # planted\n",
                             "dgxcluster.core.imageid -> dgxcluster.recipes.catalog"),
}


@pytest.mark.parametrize("contract", sorted(PLANTED) + sorted(UPWARD))
def test_a_planted_violation_breaks_its_contract(contract: str, tmp_path: Path) -> None:
    shutil.copytree(REPO / "dgxcluster", tmp_path / "dgxcluster",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    path, line, shown = {**PLANTED, **UPWARD}[contract]
    target = tmp_path / path
    text = target.read_text()
    head, sep, rest = text.partition("\nfrom __future__ import annotations\n")
    target.write_text(head + sep + line + rest if sep else line + text)
    p = _lint_imports(tmp_path)
    assert p.returncode == 1, p.stdout + p.stderr
    assert shown in p.stdout, p.stdout
    assert "BROKEN" in p.stdout


def test_complexity_and_print_rules_bite(tmp_path: Path) -> None:
    """C901 past the limit and print() outside cli/ and nodeside/ are refused by ruff."""
    pkg = tmp_path / "dgxcluster" / "core"
    pkg.mkdir(parents=True)
    branches = "\n".join(f"    if x == {i}:\n        return {i}" for i in range(14))
    (pkg / "planted.py").write_text(f"def tangled(x: int) -> int:\n{branches}\n    return -1\n\n\n"
                                    "def chatty() -> None:\n    print('hello')\n")
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    p = subprocess.run([str(BIN / "ruff"), "check", "--no-cache", "--output-format", "concise",
                        "dgxcluster"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert p.returncode == 1, p.stdout + p.stderr
    assert "C901 `tangled` is too complex" in p.stdout
    assert "T201" in p.stdout


CLOCKS = {"monotonic", "time", "perf_counter", "monotonic_ns", "perf_counter_ns"}


def _reads_clock(node: ast.AST) -> bool:
    return any(isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
               and n.func.attr in CLOCKS and isinstance(n.func.value, ast.Name)
               and n.func.value.id == "time" for n in ast.walk(node))


def _wall_clock_asserts(source: str) -> list[int]:
    """Lines of `assert`s that compare something computed from the wall clock."""
    tree = ast.parse(source)
    found: list[int] = []
    for fn in ast.walk(tree):
        if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        timed: set[str] = set()
        for node in ast.walk(fn):
            if isinstance(node, ast.Assign) and _reads_clock(node.value):
                timed |= {t.id for t in node.targets if isinstance(t, ast.Name)}
        for node in ast.walk(fn):
            if isinstance(node, ast.Assert) and (_reads_clock(node.test) or any(
                    isinstance(n, ast.Name) and n.id in timed for n in ast.walk(node.test))):
                found.append(node.lineno)
    return found


def test_the_wall_clock_check_sees_a_timed_assert() -> None:
    src = ("import time\n\ndef test_x():\n    t0 = time.monotonic()\n    work()\n"
           "    assert time.monotonic() - t0 < 1.0\n")
    assert _wall_clock_asserts(src) == [6]


def test_no_unit_test_asserts_on_the_wall_clock() -> None:
    """Speed belongs in benchmarks/: on a loaded 2-core machine a timed assert is a coin toss."""
    offenders = [f"{p.name}:{line}" for p in sorted((REPO / "tests" / "unit").glob("test_*.py"))
                 for line in _wall_clock_asserts(p.read_text())]
    assert offenders == []


def _contracts() -> dict[str, dict[str, object]]:
    import tomllib

    data = tomllib.loads((REPO / "pyproject.toml").read_text())
    return {c["id"]: c for c in data["tool"]["importlinter"]["contracts"]}


def _subpackages() -> set[str]:
    pkg = REPO / "dgxcluster"
    return {f"dgxcluster.{p.stem}" for p in pkg.iterdir()
            if (p.is_dir() and (p / "__init__.py").exists()) or (p.suffix == ".py" and p.stem not in
                                                                   ("__init__", "__main__"))}


@pytest.mark.parametrize(("contract", "exempt"), [
    ("ssh-only-in-remote", {"dgxcluster.remote"}),
    ("ui-only-in-cli", {"dgxcluster.cli"}),
    # the two that may import nodeside.vllm_argparse, and nodeside itself
    ("nodeside-as-files", {"dgxcluster.vllmcli", "dgxcluster.recipes", "dgxcluster.nodeside"}),
])
def test_forbidden_contracts_cover_every_package(contract: str, exempt: set[str]) -> None:
    """A new package must not slip past a forbidden contract by not being listed in it."""
    listed = set(_contracts()[contract]["source_modules"])  # type: ignore[arg-type]
    missing = _subpackages() - listed - exempt
    assert not missing, f"{contract}: add {sorted(missing)} to source_modules in pyproject.toml"


def test_nodeside_contract_forbids_every_other_package() -> None:
    listed = set(_contracts()["nodeside-standalone"]["forbidden_modules"])  # type: ignore[arg-type]
    missing = _subpackages() - listed - {"dgxcluster.nodeside"}
    assert not missing, f"nodeside-standalone: add {sorted(missing)} to forbidden_modules"


TIMEOUTS = """\
import pytest, sys
class Show:
    def pytest_collection_finish(self, session):
        for item in session.items:
            mark = item.get_closest_marker("timeout")
            print("TIMEOUT", item.path.parent.name, mark.args[0] if mark else None)
sys.exit(pytest.main(["--collect-only", "-q", "-p", "no:cacheprovider",
                      "tests/unit/test_units.py", "tests/e2e/test_faults.py"], plugins=[Show()]))
"""


def test_the_unit_timeout_holds_unit_tests_only_also_in_a_whole_suite_run() -> None:
    """tests/unit/conftest.py's 120 s limit: pytest calls its hook with every item of the run,
    so in a whole-suite run it reached the end-to-end tests too (CI failed a 5-minute one)."""
    p = subprocess.run([sys.executable, "-c", TIMEOUTS], cwd=REPO, capture_output=True,
                       text=True, timeout=120)
    shown = {ln for ln in p.stdout.splitlines() if ln.startswith("TIMEOUT ")}
    assert shown == {"TIMEOUT unit 120", "TIMEOUT e2e None"}, p.stdout + p.stderr
