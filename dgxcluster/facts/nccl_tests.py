"""nccl-tests result tables (`all_gather_perf`, `all_reduce_perf`, ...) and the same table
printed by dgxcluster's torch probe (`dgxcluster/nodeside/nccl_probe.py`).

The columns are named by the `#  size  count  type  redop  root  time  algbw  busbw  #wrong
...` header, so versions with or without `root`, or with `error` instead of `#wrong`, read
alike: the first time/algbw/busbw group is out-of-place, the second in-place. A cell may be
`N/A`. NCCL's own log lines can sit anywhere in between (ranks share stdout) and are skipped.
`# Avg bus bandwidth` is nccl-tests' mean busbw over every row, both placements.

A log tail (`tail -n 20`) may lack the header: rows are then read with the columns
nccl-tests 2.x prints (src/util.cu writeResultHeader: size count type redop root, then
time algbw busbw #wrong twice; 12 columns without `root` in old versions), and the table
takes its name from `# Collective test concluded: NAME` when that line is there.
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
_END = re.compile(r"^#\s*Collective test concluded:\s*(?P<name>\S+)")
#: The columns nccl-tests 2.x prints (util.cu), and those of versions before `root` existed.
DEFAULT_COLUMNS = ["size", "count", "type", "redop", "root", "time", "algbw", "busbw", "#wrong",
                   "time", "algbw", "busbw", "#wrong"]
OLD_COLUMNS = ["size", "count", "type", "redop", "time", "algbw", "busbw", "error",
               "time", "algbw", "busbw", "error"]
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
    header: bool = True  # False: columns inferred (a log tail without the header line)

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


def _headerless_columns(line: str) -> list[str] | None:
    """nccl-tests' own columns for a row seen without a header, if its shape fits."""
    toks = line.split()
    if not toks[0].isdigit() or len(toks) < 2 or not toks[1].isdigit():
        return None
    if len(toks) == len(DEFAULT_COLUMNS) and toks[4].lstrip("-").isdigit():
        return DEFAULT_COLUMNS
    if len(toks) == len(OLD_COLUMNS) and not toks[4].lstrip("-").isdigit():
        return OLD_COLUMNS
    return None


class _Reader:
    """Walks the text once; `tables` in order, each with its rows."""

    def __init__(self) -> None:
        self.tables: list[Table] = []
        self.cur: Table | None = None
        self.pending_tool: str | None = None
        self.bad_rows = 0

    def new(self, name: str | None = None, header: bool = True) -> Table:
        t = Table(name=name, tool=self.pending_tool, header=header)
        self.tables.append(t)
        self.cur = t
        return t

    def comment(self, s: str) -> None:
        cur = self.cur
        if cols := _header(s):
            if cur is None or cur.rows or not cur.header:
                cur = self.new()
            cur.columns = cols
            cur.header = True
        elif m := _END.match(s):
            if cur is not None and cur.name is None:
                cur.name = m.group("name")
        elif cur is not None and (m := _RANK.match(s)):
            cur.ranks.append((int(m.group("rank")), m.group("host"), m.group("name").strip()))
        elif m := _AVG.match(s):
            (cur or self.new(header=False)).avg_busbw = float(m.group("v"))
        elif m := _OOB.match(s):
            (cur or self.new(header=False)).out_of_bounds = int(m.group("n"))

    def row(self, s: str) -> None:
        cur = self.cur
        if cur is None or not cur.columns:
            cols = _headerless_columns(s)
            if cols is None:
                self.bad_rows += 1
                return
            if cur is None:
                cur = self.new(header=False)
            cur.columns, cur.header = cols, False
        row = _row(s, cur.columns)
        if row is None:
            self.bad_rows += 1
        else:
            cur.rows.append(row)


def parse(text: str) -> list[Table]:
    """Every result table in the text, in order. Raises ParseError if there is none."""
    r = _Reader()
    for line in content_lines(text):
        s = line.strip()
        if not s:
            continue
        if m := _TOOL.match(s):
            r.pending_tool = m.group("tool")
        elif m := _START.match(s):
            r.new(name=m.group("name"))
        elif s.startswith("#"):
            r.comment(s)
        elif s.split()[0].isdigit():
            r.row(s)
    found = [t for t in r.tables if t.columns or t.avg_busbw is not None]
    if not found:
        raise ParseError(COMMAND, "no result table (no '#  size  count ... busbw' header, "
                         "no result row, no '# Avg bus bandwidth' line)", text)
    if not any(t.rows for t in found) and r.bad_rows:
        raise ParseError(COMMAND, f"{r.bad_rows} result row(s) do not match the header", text)
    return found
