"""Finding llama-benchy and building its command line.

llama-benchy (PyPI, github.com/eugr/llama-benchy; 0.4.0 read for this) takes its API key only
as `--api-key` on its command line, where any user on the machine could read it in the
process list. So it is started through a few lines of Python that read the key from the
environment and add it to `sys.argv` inside the process; the visible command line never holds
it. Results come back through its own files: `--format json --save-result PATH` (written at
the end, and on Ctrl-C with the cells already measured) and `--emit-progress -` (one JSON
event per line on stdout, its schema `llama-benchy-progress.v1`; its messages then go to
stderr).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from dgxcluster.bench.presets import Sweep
from dgxcluster.errors import UsageError

PACKAGE = "llama-benchy"
#: The releases whose options and output this was written against.
SUPPORTED = "0.4"
INSTALL_HINT = ("install it with `pip install 'dgxcluster[bench]'` (or `pip install "
                "'llama-benchy>=0.4,<0.5'` into the environment dgxcluster runs in)")
KEY_ENV = "DGXCLUSTER_BENCH_API_KEY"

LAUNCHER = (
    "import os, sys\n"
    f"key = os.environ.pop({KEY_ENV!r}, '')\n"
    "sys.argv = ['llama-benchy', *sys.argv[1:]] + (['--api-key', key] if key else [])\n"
    "from llama_benchy.__main__ import main\n"
    "main()\n"
)


@dataclass(frozen=True)
class Tool:
    python: str  # an interpreter that imports llama_benchy
    version: str

    @property
    def supported(self) -> bool:
        return self.version == SUPPORTED or self.version.startswith(SUPPORTED + ".")


def _shebang(script: str) -> str | None:
    try:
        with open(script, "rb") as f:
            first = f.readline(512).decode("utf-8", "replace").strip()
    except OSError:
        return None
    if not first.startswith("#!"):
        return None
    parts = first[2:].split()
    if not parts:
        return None
    if Path(parts[0]).name == "env" and len(parts) > 1:
        return shutil.which(parts[1])
    return parts[0]


def _version_in(python: str) -> str | None:
    code = "import importlib.metadata as m; print(m.version('llama-benchy'))"
    try:
        p = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=60,
                           check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if p.returncode != 0:
        return None
    return p.stdout.strip() or None


def find() -> Tool:
    """llama-benchy in dgxcluster's own environment, else the one `llama-benchy` on PATH runs."""
    if importlib.util.find_spec("llama_benchy") is not None:
        try:
            return Tool(sys.executable, importlib.metadata.version(PACKAGE))
        except importlib.metadata.PackageNotFoundError:
            pass
    script = shutil.which("llama-benchy")
    python = _shebang(script) if script else None
    version = _version_in(python) if python else None
    if python and version:
        return Tool(python, version)
    raise UsageError(f"llama-benchy is not installed: {INSTALL_HINT}")


def argv(tool_python: str, url: str, sweep: Sweep, model: str, served: str, result: Path,
         tokenizer: str | None = None, book_url: str | None = None,
         skip_coherence: bool = False) -> list[str]:
    """The whole command line; string values as `--opt=value` so none is read as an option."""
    out = [tool_python, "-c", LAUNCHER, f"--base-url={url}", f"--model={model}",
           f"--served-model-name={served}",
           "--pp", *map(str, sweep.pp), "--tg", *map(str, sweep.tg),
           "--depth", *map(str, sweep.depths), "--concurrency", *map(str, sweep.concurrency),
           f"--runs={sweep.runs}", f"--latency-mode={sweep.latency_mode}",
           "--format=json", f"--save-result={result}", "--emit-progress=-"]
    if tokenizer:
        out.append(f"--tokenizer={tokenizer}")
    if book_url:
        out.append(f"--book-url={book_url}")
    if skip_coherence:
        out.append("--skip-coherence")
    return out


def options(command: list[str]) -> list[str]:
    """llama-benchy's own options from a command line (what a result records as its recipe)."""
    return command[3:] if len(command) > 2 and command[1] == "-c" else command[1:]
