"""Structured logging (structlog): console or JSON on stderr, secrets redacted, per-node files.

`-v` shows every remote argv (secrets masked) with node and duration. Long steps also write
one file per node per step under the run's log directory, so a failure can be read later.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from dgxcluster.secrets import Redactor

if TYPE_CHECKING:
    import structlog

DEFAULT_LOG_ROOT = Path(
    os.environ.get("XDG_STATE_HOME", str(Path.home() / ".local" / "state"))
) / "dgxcluster" / "runs"

#: structlog's level numbers (the stdlib's), for the check made before it is imported.
_LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40, "critical": 50}


def _redacting(redactor: Redactor) -> structlog.types.Processor:
    def processor(
        _logger: Any, _name: str, event: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        for key, value in list(event.items()):
            if isinstance(value, str):
                event[key] = redactor.display(value)
            elif value is not None and not isinstance(value, (int, float, bool)):
                event[key] = redactor.display(str(value))
        return event

    return processor


@dataclass
class _Settings:
    level: int
    fmt: str
    redactor: Redactor
    stream: TextIO


#: What `configure` asked for and structlog has not been given yet; `_level`: the
#: threshold in force. structlog (with rich, which its console renderer pulls in) costs
#: about 0.1 s to import, so a run that shows no event (`exec`, `status` without `-v`)
#: never imports it.
_pending: _Settings | None = None
_level = 30
_state_lock = threading.Lock()


def configure(
    verbosity: int = 0,
    fmt: str = "console",
    redactor: Redactor | None = None,
    stream: TextIO | None = None,
) -> None:
    """Configure logging once per invocation. verbosity 0: warnings, 1: info+debug of runs.
    structlog itself is configured at the first event shown."""
    global _pending, _level
    with _state_lock:
        _level = 30 if verbosity <= 0 else 10
        _pending = _Settings(_level, fmt, redactor or Redactor(), stream or sys.stderr)


def _apply(s: _Settings) -> None:
    import structlog

    processors: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _redacting(s.redactor),
    ]
    if s.fmt == "json":
        processors.append(structlog.processors.JSONRenderer())
    else:
        processors.append(structlog.dev.ConsoleRenderer(colors=False, pad_event_to=0))
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(s.level),
        logger_factory=structlog.PrintLoggerFactory(s.stream),
        cache_logger_on_first_use=False,
    )


def _structlog_logger() -> Any:
    """structlog's logger, configured as `configure` last asked (imported here, once)."""
    global _pending
    import structlog

    with _state_lock:
        if _pending is not None:
            _apply(_pending)
            _pending = None
        elif not structlog.is_configured():
            _apply(_Settings(30, "console", Redactor(), sys.stderr))
    return structlog.get_logger("dgxcluster")


class Logger:
    """A bound logger that imports structlog only for an event at or above the level in
    force (the same events structlog's filtering logger would show)."""

    def __init__(self, bound: dict[str, Any]) -> None:
        self._bound = bound

    def bind(self, **more: Any) -> Logger:
        return Logger({**self._bound, **more})

    def _emit(self, level: str, event: str, kw: dict[str, Any]) -> None:
        if _LEVELS[level] < _level:
            return
        getattr(_structlog_logger().bind(**self._bound), level)(event, **kw)

    def debug(self, event: str, **kw: Any) -> None:
        self._emit("debug", event, kw)

    def info(self, event: str, **kw: Any) -> None:
        self._emit("info", event, kw)

    def warning(self, event: str, **kw: Any) -> None:
        self._emit("warning", event, kw)

    def error(self, event: str, **kw: Any) -> None:
        self._emit("error", event, kw)


def get_logger(**bind: Any) -> Logger:
    """A bound logger. Used as a library without `configure`, only warnings are shown."""
    return Logger(bind)


@dataclass
class RunLogs:
    """One directory per invocation; one file per node per step inside it.

    Every line written passes through the redactor first.
    """

    root: Path
    redactor: Redactor = field(default_factory=Redactor)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def create(cls, command: str, base: Path | None, redactor: Redactor) -> RunLogs:
        base = base or Path(os.environ.get("DGXCLUSTER_LOG_DIR", str(DEFAULT_LOG_ROOT)))
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        root = base / f"{stamp}-{command}-{os.getpid()}"
        return cls(root=root, redactor=redactor)

    def path(self, node: str, step: str) -> Path:
        return self.root / node / f"{step}.log"

    def writer(self, node: str, step: str) -> NodeStepLog:
        p = self.path(node, step)
        with self._lock:
            p.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        return NodeStepLog(p, self.redactor)


class NodeStepLog:
    """Append-only log file for one node and one step (redacted, line-buffered)."""

    def __init__(self, path: Path, redactor: Redactor) -> None:
        self.path = path
        self._redact = redactor
        self._fh = open(path, "a", encoding="utf-8", buffering=1)  # noqa: SIM115
        os.chmod(path, 0o600)

    def line(self, text: str) -> None:
        self._fh.write(self._redact.display(text.rstrip("\n")) + "\n")

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> NodeStepLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
