"""nccl-tests result tables (`all_gather_perf`, `all_reduce_perf`, ...) and the same table
printed by dgxcluster's torch probe (`dgxcluster/nodeside/nccl_probe.py`).

The columns are named by the `#  size  count  type  redop  root  time  algbw  busbw  #wrong
...` header, so versions with or without `root`, or with `error` instead of `#wrong`, read
alike: the first time/algbw/busbw group is out-of-place, the second in-place. A cell may be
`N/A`. NCCL's own log lines can sit anywhere in between (ranks share stdout) and are skipped.
`# Avg bus bandwidth` is nccl-tests' mean busbw over every row, both placements.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from dgxcluster.facts import ParseError, content_lines

COMMAND = "nccl-tests"

_START = re.compile(r"^#\s*Collective test starting:\s*(?P<name>\S+)")
_AVG = re.compile(r"^#\s*Avg bus bandwidth\s*:\s*(?P<v>[-+0-9.eE]+|nan|inf)", re.IGNORECASE)
_OOB = re.compile(r"^#\s*Out of bounds values\s*:\s*(?P<n>\d+)")
_RANK = re.compile(r"^#\s*Rank\s+(?P<rank>\d+)\s.*?\bon\s+(?P<host>\S+)\s+device\s+(?P<dev>\d+)"
                   r"(?:\s+\[[^\]]*\])?\s*(?P<name>.*)$")
_TOOL = re.compile(r"^#\s*(?P<tool>nccl-tests version \S+|dgxcluster nccl_probe \S+)")


@dataclass(frozen=True)
class Measure:
    time_us: float | None
    algbw: float | None
    busbw: float | None
    wrong: int | None


@dataclass(frozen=True)
class Row:
    size: int
    count: int
    type: str
    redop: str
    oop: Measure | None
    ip: Measure | None

    @property
    def best_busbw(self) -> float | None:
        vals = [m.busbw for m in (self.oop, self.ip) if m is not None and m.busbw is not None]
        return max(vals) if vals else None


@dataclass
class Table:
    name: str | None = None  # all_gather_perf, ...
    tool: str | None = None
    ranks: list[tuple[int, str, str]] = field(default_factory=list)  # rank, host, device
    columns: list[str] = field(default_factory=list)
    rows: list[Row] = field(default_factory=list)
    avg_busbw: float | None = None
    out_of_bounds: int | None = None

    @property
    def op(self) -> str | None:
        return self.name.removesuffix("_perf") if self.name else None

    @property
    def largest(self) -> Row | None:
        return max(self.rows, key=lambda r: r.size) if self.rows else None

    @property
    def busbw_at_largest(self) -> float | None:
        """Best of out-of-place and in-place at the largest size: the sustained figure."""
        row = self.largest
        return row.best_busbw if row else None

    @property
    def peak_busbw(self) -> float | None:
        vals = [b for r in self.rows if (b := r.best_busbw) is not None]
        return max(vals) if vals else None

    @property
    def wrong(self) -> int:
        return sum(m.wrong or 0 for r in self.rows for m in (r.oop, r.ip) if m is not None)


def _num(tok: str) -> float | None:
    if tok.upper() == "N/A":
        return None
    try:
        return float(tok)
    except ValueError:
        raise ValueError(tok) from None


def _measure(tokens: list[str], cols: list[str], start: int) -> Measure | None:
    """The time/algbw/busbw/#wrong group whose `time` column is at `start`."""
    vals: dict[str, str] = {}
    for i in range(start, min(start + 4, len(cols))):
        vals[cols[i]] = tokens[i]
    t, a, b = (_num(vals.get(k, "N/A")) for k in ("time", "algbw", "busbw"))
    w_tok = vals.get("#wrong", vals.get("error", "N/A"))
    w_val = _num(w_tok)
    if t is None and a is None and b is None:
        return None
    return Measure(t, a, b, None if w_val is None else int(w_val))


def _header(line: str) -> list[str] | None:
    toks = line.lstrip("#").split()
    if "size" in toks and "busbw" in toks and "time" in toks:
        return toks
    return None


def _row(line: str, cols: list[str]) -> Row | None:
    toks = line.split()
    if len(toks) != len(cols) or not toks[0].isdigit():
        return None
    times = [i for i, c in enumerate(cols) if c == "time"]
    idx = {c: i for i, c in reversed(list(enumerate(cols)))}
    try:
        oop = _measure(toks, cols, times[0]) if times else None
        ip = _measure(toks, cols, times[1]) if len(times) > 1 else None
        return Row(size=int(toks[idx["size"]]), count=int(toks[idx.get("count", 0)]),
                   type=toks[idx["type"]] if "type" in idx else "?",
                   redop=toks[idx["redop"]] if "redop" in idx else "?", oop=oop, ip=ip)
    except (ValueError, KeyError):
        return None


def _comment(s: str, cur: Table | None, tables: list[Table], tool: str | None) -> Table | None:
    """A `#` line: a table header (a new table unless the current one has no rows yet), a
    rank line, the average bus bandwidth or the out-of-bounds count. The current table."""
    if cols := _header(s):
        if cur is None or cur.rows:
            cur = Table(tool=tool)
            tables.append(cur)
        cur.columns = cols
    elif cur is not None and (m := _RANK.match(s)):
        cur.ranks.append((int(m.group("rank")), m.group("host"), m.group("name").strip()))
    elif cur is not None and (m := _AVG.match(s)):
        cur.avg_busbw = float(m.group("v"))
    elif cur is not None and (m := _OOB.match(s)):
        cur.out_of_bounds = int(m.group("n"))
    return cur


def parse(text: str) -> list[Table]:
    """Every result table in the text, in order. Raises ParseError if there is none."""
    tables: list[Table] = []
    cur: Table | None = None
    pending_tool: str | None = None
    bad_rows = 0
    for line in content_lines(text):
        s = line.strip()
        if not s:
            continue
        if m := _TOOL.match(s):
            pending_tool = m.group("tool")
            continue
        if m := _START.match(s):
            cur = Table(name=m.group("name"), tool=pending_tool)
            tables.append(cur)
            continue
        if s.startswith("#"):
            cur = _comment(s, cur, tables, pending_tool)
            continue
        if cur is not None and cur.columns and s.split()[0].isdigit():
            row = _row(s, cur.columns)
            if row is None:
                bad_rows += 1
            else:
                cur.rows.append(row)
    found = [t for t in tables if t.columns]
    if not found:
        raise ParseError(COMMAND, "no result table ('#  size  count ... busbw' header)", text)
    if not any(t.rows for t in found) and bad_rows:
        raise ParseError(COMMAND, f"{bad_rows} result row(s) do not match the header", text)
    return found
