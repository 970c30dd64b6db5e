"""Bench results: llama-benchy's JSON report read into cells, saved as JSON and CSV with what
was measured, loaded back, and compared cell by cell.

A cell is one (prompt size, generation length, context depth, concurrency) of the sweep with
llama-benchy's figures (mean and standard deviation over its runs): prompt processing and
token generation tokens/s (in total over the concurrent requests, and per request), peak
generation tokens/s, and time to first token (`e2e_ttft`, ms: what a client waits for the
first generated token). Its report (`--format json`) holds one entry per cell under
`benchmarks` with those figures as {mean, std, values}.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dgxcluster.bench.presets import CellKey
from dgxcluster.errors import UsageError

FORMAT = "dgxcluster-bench/1"
#: What a result records about the setup it measured (phase 2 fills these from the cluster).
MEASURED_KEYS = ("config_hash", "image_tag", "vllm_version", "executor", "topology", "recipe",
                 "model", "revision", "node_count")
#: llama-benchy's report fields, under the names a cell keeps them.
FIELDS = {"pp_tps": "pp_throughput", "pp_tps_req": "pp_req_throughput",
          "tg_tps": "tg_throughput", "tg_tps_req": "tg_req_throughput",
          "peak_tps": "peak_throughput", "ttft_ms": "e2e_ttft", "ttfr_ms": "ttfr",
          "est_ppt_ms": "est_ppt"}


class ReportError(ValueError):
    """llama-benchy's report is not what this version reads."""


@dataclass(frozen=True)
class Stat:
    mean: float
    std: float


@dataclass(frozen=True)
class Cell:
    key: CellKey
    stats: dict[str, Stat]

    def get(self, name: str) -> float | None:
        s = self.stats.get(name)
        return s.mean if s is not None else None

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {"pp": self.key.pp, "tg": self.key.tg, "depth": self.key.depth,
                                  "concurrency": self.key.concurrency}
        for name in FIELDS:
            s = self.stats.get(name)
            out[name] = None if s is None else {"mean": s.mean, "std": s.std}
        return out

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Cell:
        key = CellKey(int(d["pp"]), int(d["tg"]), int(d["depth"]), int(d["concurrency"]))
        stats = {name: Stat(float(v["mean"]), float(v["std"]))
                 for name in FIELDS if isinstance(v := d.get(name), dict)}
        return cls(key, stats)


def _stat(value: Any) -> Stat | None:
    if not isinstance(value, dict) or "mean" not in value:
        return None
    mean, std = float(value["mean"]), float(value.get("std") or 0.0)
    return Stat(mean, std) if math.isfinite(mean) else None


def cells_from_report(report: dict[str, Any]) -> list[Cell]:
    """Cells of a llama-benchy JSON report (`--format json`). Context-prefill phases
    (`--enable-prefix-caching`, not used by dgxcluster) are left out."""
    runs = report.get("benchmarks")
    if not isinstance(runs, list):
        raise ReportError("no `benchmarks` list (not a llama-benchy JSON report)")
    out: list[Cell] = []
    for run in runs:
        if not isinstance(run, dict) or run.get("is_context_prefill_phase"):
            continue
        try:
            key = CellKey(int(run["prompt_size"]), int(run["response_size"]),
                          int(run["context_size"]), int(run["concurrency"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise ReportError(f"a benchmark entry lacks {exc}") from None
        stats = {name: s for name, src in FIELDS.items() if (s := _stat(run.get(src)))}
        out.append(Cell(key, stats))
    return out


@dataclass
class BenchResult:
    endpoint: str
    model: str | None
    served_model: str | None
    preset: str
    sweep: dict[str, object]
    measured: dict[str, object]
    tool: dict[str, object]
    started: str
    finished: str
    complete: bool
    cells: list[Cell]
    notes: list[str] = field(default_factory=list)
    report: dict[str, Any] | None = None

    def to_json(self) -> dict[str, object]:
        return {"format": FORMAT, "endpoint": self.endpoint, "model": self.model,
                "served_model": self.served_model, "preset": self.preset, "sweep": self.sweep,
                "measured": self.measured, "tool": self.tool, "started": self.started,
                "finished": self.finished, "complete": self.complete, "notes": self.notes,
                "cells": [c.to_json() for c in self.cells], "llama_benchy_report": self.report}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> BenchResult:
        return cls(endpoint=str(d.get("endpoint", "")), model=d.get("model"),
                   served_model=d.get("served_model"), preset=str(d.get("preset", "")),
                   sweep=dict(d.get("sweep") or {}), measured=dict(d.get("measured") or {}),
                   tool=dict(d.get("tool") or {}), started=str(d.get("started", "")),
                   finished=str(d.get("finished", "")), complete=bool(d.get("complete")),
                   cells=[Cell.from_json(c) for c in d["cells"]], notes=list(d.get("notes") or []),
                   report=d.get("llama_benchy_report"))


CSV_COLUMNS = [*MEASURED_KEYS, "endpoint", "served_model", "started", "complete",
               "llama_benchy_version", "pp", "tg", "depth", "concurrency",
               *[f"{name}{suffix}" for name in FIELDS for suffix in ("", "_std")]]


def to_csv(result: BenchResult) -> str:
    """One row per cell, with what was measured repeated on every row (easy to concatenate)."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    w.writeheader()
    for cell in result.cells:
        row: dict[str, object] = {k: result.measured.get(k) for k in MEASURED_KEYS}
        row.update(endpoint=result.endpoint, served_model=result.served_model,
                   started=result.started, complete=result.complete,
                   llama_benchy_version=result.tool.get("version"), pp=cell.key.pp,
                   tg=cell.key.tg, depth=cell.key.depth, concurrency=cell.key.concurrency)
        for name in FIELDS:
            s = cell.stats.get(name)
            row[name] = None if s is None else round(s.mean, 3)
            row[f"{name}_std"] = None if s is None else round(s.std, 3)
        w.writerow(row)
    return buf.getvalue()


def save(result: BenchResult, directory: Path, stem: str) -> tuple[Path, Path]:
    """Write `<stem>.json` and `<stem>.csv` in `directory` (made if missing)."""
    directory.mkdir(parents=True, exist_ok=True)
    json_path = directory / f"{stem}.json"
    csv_path = directory / f"{stem}.csv"
    json_path.write_text(json.dumps(result.to_json(), indent=2) + "\n")
    csv_path.write_text(to_csv(result))
    return json_path, csv_path


def load(path: Path, option: str = "--compare") -> BenchResult:
    """A saved result, or a bare llama-benchy JSON report (as published by others)."""
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}", option) from None
    except ValueError as exc:
        raise UsageError(f"{path} is not JSON: {exc}", option) from None
    if not isinstance(data, dict):
        raise UsageError(f"{path} is not a bench result", option)
    try:
        if data.get("format") == FORMAT:
            return BenchResult.from_json(data)
        cells = cells_from_report(data)
    except (ReportError, KeyError, TypeError, ValueError) as exc:
        raise UsageError(f"{path} is not a bench result or llama-benchy report: {exc}",
                         option) from None
    return BenchResult(endpoint="", model=data.get("model"), served_model=None, preset="",
                       sweep={}, measured={}, tool={"name": "llama-benchy",
                                                   "version": data.get("version")},
                       started=str(data.get("timestamp", "")), finished="", complete=True,
                       cells=cells, report=data)


@dataclass(frozen=True)
class CellRatio:
    """new / old per figure; for TTFT below 1 is better, for tokens/s above 1 is."""

    key: CellKey
    pp_tps: float | None
    tg_tps: float | None
    ttft_ms: float | None


@dataclass(frozen=True)
class Comparison:
    ratios: list[CellRatio]
    only_old: list[CellKey]
    only_new: list[CellKey]


def _ratio(new: float | None, old: float | None) -> float | None:
    if new is None or old is None or old == 0:
        return None
    return new / old


def compare(old: BenchResult, new: BenchResult) -> Comparison:
    before = {c.key: c for c in old.cells}
    after = {c.key: c for c in new.cells}
    ratios = [CellRatio(k, _ratio(c.get("pp_tps"), before[k].get("pp_tps")),
                        _ratio(c.get("tg_tps"), before[k].get("tg_tps")),
                        _ratio(c.get("ttft_ms"), before[k].get("ttft_ms")))
              for k, c in after.items() if k in before]
    return Comparison(ratios, [k for k in before if k not in after],
                      [k for k in after if k not in before])
