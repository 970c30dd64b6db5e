"""Shared helpers for benchmarks: bring up a testbed, time commands, print medians and ratios.

Benchmarks print figures; they are not tests and assert nothing about speed.
"""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
TESTBED = REPO / "scripts" / "testbed"
PY = str(REPO / ".venv" / "bin" / "python")


def as_installed() -> None:
    """dgxcluster's bytecode compiled, as `pip install` leaves it: this checkout's editable
    install has none, and with PYTHONDONTWRITEBYTECODE set (as here) every run would compile
    ~50 modules from source again (~0.1 s of start-up no installed copy pays)."""
    subprocess.run([PY, "-m", "compileall", "-q", str(REPO / "dgxcluster")], check=True,
                   capture_output=True, timeout=300)


def testbed_up(name: str, n: int, docker: bool = False) -> Path:
    """The testbed `name` with `n` nodes; dgxcluster's bytecode compiled (`as_installed`),
    so every benchmark against a testbed times dgxcluster as an installed copy runs."""
    as_installed()
    args = [str(TESTBED), "--name", name, "up", str(n)] + (["--docker"] if docker else [])
    subprocess.run(args, check=True, capture_output=True, text=True, timeout=1800)
    stem = "testbed" if name == "tb" else f"testbed-{name}"
    return REPO / "inventory" / f"{stem}.yaml"


def ensure_image(inventory: Path) -> None:
    """The inventory's image on every node, through the real `dgxcluster build`."""
    subprocess.run([str(REPO / "images" / "testbed" / "fetch-wheels")], check=True,
                   capture_output=True, timeout=900)
    subprocess.run([PY, "-m", "dgxcluster", "-i", str(inventory), "build", "--all-nodes"],
                   check=True, capture_output=True, text=True, timeout=1800)


def ensure_model(name: str, inventory: Path, repo: str = "Qwen/Qwen3-0.6B") -> None:
    """The served model on every node: a synthetic one made on node1, then `model sync`."""
    subprocess.run([str(TESTBED), "--name", name, "seed-model", "node1", repo], check=True,
                   capture_output=True, timeout=300)
    subprocess.run([PY, "-m", "dgxcluster", "-i", str(inventory), "model", "sync", repo],
                   check=True, capture_output=True, text=True, timeout=600)


#: The environment of a cold run: no warm server is used, even if the operator has one.
COLD = {**os.environ, "DGXCLUSTER_WARM_SOCKET": ""}


@contextlib.contextmanager
def warm_server() -> Iterator[dict[str, str]]:
    """A `dgxcluster warm` server of this checkout on its own socket, for the benchmark's
    warm runs; yields the environment that sends commands to it, and stops it after. Exits
    if the server did not serve to the end: it stops itself when the checkout's code changes
    during the run, and the "warm" runs after that were cold ones."""
    with tempfile.TemporaryDirectory(prefix="dgxc-warm-") as tmp:
        env = {**os.environ, "DGXCLUSTER_WARM_SOCKET": f"{tmp}/s/warm.sock"}
        status = [PY, "-m", "dgxcluster", "warm", "status", "--json"]
        subprocess.run([PY, "-m", "dgxcluster", "warm", "start"], env=env, check=True,
                       capture_output=True, timeout=120)
        pid = json.loads(subprocess.run(status, env=env, check=True, capture_output=True,
                                        timeout=120).stdout)["pid"]
        try:
            yield env
            now = json.loads(subprocess.run(status, env=env, check=True, capture_output=True,
                                            timeout=120).stdout)
        finally:
            subprocess.run([PY, "-m", "dgxcluster", "warm", "stop"], env=env, check=False,
                           capture_output=True, timeout=120)
        if now.get("pid") != pid or now.get("stale"):
            sys.exit("the warm server stopped or went stale during the run (was the code "
                     "edited?): its warm figures are not warm; run the benchmark again")


def testbed_down(name: str) -> None:
    """Take the benchmark's testbed down; says so on stderr when that failed."""
    if not os.environ.get("DGXTB_KEEP"):
        p = subprocess.run([str(TESTBED), "--name", name, "down"], capture_output=True,
                           text=True, check=False)
        if p.returncode != 0:
            print(f"testbed {name} not taken down ({p.returncode}): {p.stderr[-500:]}",
                  file=sys.stderr)


def timed(argv: Sequence[str], env: dict[str, str] | None = None) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(list(argv), capture_output=True, text=True, env=env, check=False)
    dt = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"benchmark command failed ({proc.returncode}): {' '.join(argv)}\n{proc.stderr}")
    return dt


def median(xs: Sequence[float]) -> float:
    return statistics.median(xs)


def report(title: str, rows: Sequence[tuple[str, float]], baseline: str) -> None:
    base = dict(rows)[baseline]
    print(f"\n{title}")
    for name, value in rows:
        print(f"  {name:<44} {value:8.3f} s   ratio vs {baseline}: {value / base:5.2f}")


def subset(inv: Path, n: int) -> Path:
    """An inventory of the testbed's first `n` nodes, beside it (so known_hosts resolves)."""
    doc = yaml.safe_load(inv.read_text())
    doc["nodes"] = doc["nodes"][:n]
    out = inv.with_name(f"{inv.stem}-first{n}.yaml")
    out.write_text(yaml.safe_dump(doc, sort_keys=False))
    return out
