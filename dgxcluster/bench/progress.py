"""llama-benchy's progress events (`--emit-progress`, schema `llama-benchy-progress.v1`: one
JSON object per line: header, latency_measured, request_start, request_first_response,
request_first_token, tokens, request_end, bench_complete) turned into what a progress bar
shows: requests done out of the sweep's total, the cell being measured, the cells finished.
Warmup runs emit no events, so only measured requests count.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from dgxcluster.bench.presets import CellKey, Sweep

SCHEMA = "llama-benchy-progress.v1"


@dataclass
class Tracker:
    sweep: Sweep
    done: int = 0
    errors: int = 0
    cell: CellKey | None = None
    finished: list[CellKey] = field(default_factory=list)
    version: str | None = None
    status: str | None = None
    last_error: str | None = None
    _per_cell: dict[CellKey, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return self.sweep.requests()

    def feed(self, line: str) -> bool:
        """Take one stdout line; True when it was an event that changed what is shown."""
        try:
            event = json.loads(line)
        except ValueError:
            return False
        if not isinstance(event, dict) or event.get("schema") != SCHEMA:
            return False
        kind = event.get("type")
        if kind == "header":
            self.version = str(event.get("llama_benchy_version") or "") or None
        elif kind == "request_start":
            try:
                self.cell = CellKey(int(event["prompt_size"]), int(event["response_size"]),
                                    int(event["context_size"]), int(event["concurrency"]))
            except (KeyError, TypeError, ValueError):
                return False
        elif kind == "request_end":
            self.done += 1
            if event.get("error"):
                self.errors += 1
                self.last_error = str(event["error"])[:300]
            if self.cell is not None:
                n = self._per_cell.get(self.cell, 0) + 1
                self._per_cell[self.cell] = n
                if n == self.cell.concurrency * self.sweep.runs:
                    self.finished.append(self.cell)
        elif kind == "bench_complete":
            self.status = str(event.get("status") or "")
        else:
            return False
        return True
