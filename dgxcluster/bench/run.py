"""One bench run: ask the endpoint what it serves, run llama-benchy over the sweep with live
progress, and keep its cells, also when the run is interrupted.

Ctrl-C (or SIGTERM turned into KeyboardInterrupt by the CLI) is passed on to llama-benchy as
one SIGINT: it stops, saves the cells it has finished and exits; the cell in progress is lost.
llama-benchy runs in its own session, so a terminal's Ctrl-C reaches it only through us, once.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from dgxcluster.bench import results, tool
from dgxcluster.bench.presets import Sweep
from dgxcluster.bench.progress import Tracker
from dgxcluster.core.endpoint import Getter, probe
from dgxcluster.errors import DgxClusterError, UsageError

if TYPE_CHECKING:
    from dgxcluster.secrets import Secret

#: How long llama-benchy gets to save its cells after Ctrl-C before it is terminated.
STOP_GRACE_S = 60.0
HF_NAME = re.compile(r"^[^/\s]+/[^/\s]+$")


class BenchError(DgxClusterError):
    """The benchmark could not run or measured nothing (exit 1)."""


@dataclass(frozen=True)
class BenchSpec:
    url: str
    preset: str
    sweep: Sweep
    model: str | None = None
    tokenizer: str | None = None
    book_url: str | None = None
    skip_coherence: bool = False
    api_key: Secret | None = None
    measured: dict[str, object] = field(default_factory=dict)
    notes: tuple[str, ...] = ()  # about what was measured (e.g. what could not be read)


@dataclass(frozen=True)
class Target:
    """The endpoint as it describes itself."""

    url: str  # OpenAI base URL, ending in /v1
    model: str  # the Hugging Face name (llama-benchy's --model, its default tokenizer)
    served: str  # the name requests carry
    vllm_version: str | None
    #: where llama-benchy connects when not `url`: a local port forwarded through the head's
    #: SSH connection (core.forward) when this machine does not reach the endpoint
    connect_url: str | None = None


@dataclass
class Outcome:
    result: results.BenchResult
    interrupted: bool
    returncode: int | None
    log: Path
    tracker: Tracker


def split_url(url: str, option: str = "--url") -> tuple[str, str]:
    """(server root, OpenAI base URL) from either form; http(s) only."""
    from urllib.parse import urlsplit

    text = url.strip().rstrip("/")
    try:
        parts = urlsplit(text)
        ok = parts.scheme in ("http", "https") and bool(parts.hostname) and parts.port != 0
    except ValueError:
        ok = False
    if not ok or any(c.isspace() or ord(c) < 32 for c in text):
        raise UsageError(f"{url!r} is not an http(s) URL such as http://spark1:8000/v1", option)
    root = text[: -len("/v1")] if text.endswith("/v1") else text
    return root, f"{root}/v1"


def resolve(url: str, model: str | None, get: Getter, timeout: float = 10.0) -> Target:
    """Check the endpoint answers (/health, /v1/models) and pick the model to benchmark."""
    root, base = split_url(url)
    state = probe(root, get, timeout)
    if not state.ready:
        hint = ""
        if state.error and "HTTP 401" in state.error:
            hint = ("\n  fix: the endpoint wants an API key: export it as VLLM_API_KEY (or name "
                    "its variable with --api-key-env)")
        raise BenchError(state.reason() + hint)
    try:
        status, body = get(f"{base}/models", timeout)
        entries = [e for e in json.loads(body).get("data", []) if isinstance(e, dict) and "id" in e]
    except (OSError, ValueError, AttributeError) as exc:
        raise BenchError(f"{base}/models: {exc}") from None
    if status != 200 or not entries:
        raise BenchError(f"{base}/models returned {status} with no model")
    if model is None:
        if len(entries) > 1:
            names = ", ".join(str(e["id"]) for e in entries)
            raise UsageError(f"the endpoint serves several models ({names}); pick one", "--model")
        entry = entries[0]
    else:
        entry = next((e for e in entries if model in (e.get("id"), e.get("root"))), {})
        if not entry:
            names = ", ".join(str(e["id"]) for e in entries)
            raise UsageError(f"{model!r} is not served at {base} (it serves {names})", "--model")
    served = str(entry["id"])
    root_name = str(entry.get("root") or "")
    hf = model if model and HF_NAME.match(model) else (root_name if HF_NAME.match(root_name) else served)
    return Target(base, hf, served, _version(root, get, timeout))


def _version(root: str, get: Getter, timeout: float) -> str | None:
    """vLLM's GET /version ({"version": "0.20.1"}); None from servers without it."""
    try:
        status, body = get(f"{root}/version", timeout)
        return str(json.loads(body)["version"]) if status == 200 else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _utc(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def _stop(proc: subprocess.Popen[str]) -> None:
    """One SIGINT, time to save, then terminate; a second Ctrl-C kills it at once."""
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGINT)
    try:
        proc.wait(STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    except KeyboardInterrupt:
        proc.kill()
        proc.wait()


def _read_report(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


Popen = Callable[..., "subprocess.Popen[str]"]


def run(spec: BenchSpec, target: Target, bench_tool: tool.Tool, directory: Path, stem: str,
        on_progress: Callable[[Tracker], None] = lambda _t: None,
        popen: Popen = subprocess.Popen) -> Outcome:
    """Run llama-benchy and read its report; never raises on interruption (see Outcome)."""
    directory.mkdir(parents=True, exist_ok=True)
    report_path = directory / f".{stem}.llama-benchy.json"
    log_path = directory / f"{stem}.log"
    command = tool.argv(bench_tool.python, target.connect_url or target.url, spec.sweep,
                        target.model, target.served, report_path, spec.tokenizer,
                        spec.book_url, spec.skip_coherence)
    env = dict(os.environ)
    env.pop(tool.KEY_ENV, None)
    if spec.api_key is not None:
        env[tool.KEY_ENV] = spec.api_key.reveal()
    tracker = Tracker(spec.sweep)
    tail: deque[str] = deque(maxlen=40)
    started = time.time()
    interrupted = False
    with open(log_path, "w") as log:
        proc = popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log,
                     env=env, text=True, bufsize=1, start_new_session=True)
        try:
            _follow(proc.stdout, tracker, on_progress, tail)
            proc.wait()
        except KeyboardInterrupt:
            interrupted = True
            _stop(proc)
    log_text = log_path.read_text(errors="replace")
    report = _read_report(report_path)
    report_path.unlink(missing_ok=True)
    cells = results.cells_from_report(report) if report is not None else []
    if not cells and not interrupted:
        lines = [ln for ln in log_text.splitlines() if ln.strip()][-20:] or list(tail)
        raise BenchError("llama-benchy measured nothing (exit status "
                         f"{proc.returncode}); its last lines:\n" + "\n".join(lines)
                         + f"\n(full log: {log_path})")
    notes = list(spec.notes)
    if tracker.errors:
        notes.append(f"{tracker.errors} request(s) failed; the last: {tracker.last_error}")
    if interrupted:
        notes.append(f"interrupted: {len(cells)} of {len(spec.sweep.cells())} cell(s) measured")
    if not bench_tool.supported:
        notes.append(f"llama-benchy {bench_tool.version} is not the tested {tool.SUPPORTED}.x")
    measured: dict[str, object] = {k: None for k in results.MEASURED_KEYS}
    measured.update(spec.measured)
    measured["model"] = measured.get("model") or target.model
    measured["vllm_version"] = measured.get("vllm_version") or target.vllm_version
    result = results.BenchResult(
        endpoint=target.url, model=target.model, served_model=target.served, preset=spec.preset,
        sweep=spec.sweep.to_json(), measured=measured,
        tool={"name": tool.PACKAGE, "version": tracker.version or bench_tool.version,
              "options": tool.options(command), "api_key": spec.api_key is not None},
        started=_utc(started), finished=_utc(time.time()),
        complete=not interrupted and len(cells) == len(spec.sweep.cells()),
        cells=cells, notes=notes, report=report)
    return Outcome(result, interrupted, proc.returncode, log_path, tracker)


def _follow(stream: IO[str] | None, tracker: Tracker, on_progress: Callable[[Tracker], None],
            tail: deque[str]) -> None:
    if stream is None:
        return
    for line in stream:
        if tracker.feed(line):
            on_progress(tracker)
        else:
            tail.append(line.rstrip("\n"))
