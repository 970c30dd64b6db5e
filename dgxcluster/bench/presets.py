"""Sweeps: which llama-benchy runs a bench makes, and the presets `--quick` and `--standard`.

llama-benchy runs the cross product depth -> pp -> tg -> concurrency, each cell `runs` times
after one warmup run (its `--runs`, default 3). Prompt processing is timed in its
`generation` latency mode, which its README recommends for figures close to the server's.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from dgxcluster.errors import UsageError


@dataclass(frozen=True)
class CellKey:
    """One cell of a sweep: llama-benchy's `pp{pp} @ d{depth} (c{concurrency})`, tg{tg}."""

    pp: int
    tg: int
    depth: int
    concurrency: int

    def label(self) -> str:
        return f"pp{self.pp} tg{self.tg} @ d{self.depth} c{self.concurrency}"


@dataclass(frozen=True)
class Sweep:
    pp: tuple[int, ...]
    tg: tuple[int, ...]
    depths: tuple[int, ...]
    concurrency: tuple[int, ...]
    runs: int
    latency_mode: str = "generation"

    def cells(self) -> list[CellKey]:
        """In llama-benchy's order, so progress can name the cell being measured."""
        return [CellKey(pp, tg, d, c) for d in self.depths for pp in self.pp for tg in self.tg
                for c in self.concurrency]

    def requests(self) -> int:
        """Measured requests (warmup runs are not counted, as llama-benchy reports none)."""
        return sum(k.concurrency for k in self.cells()) * self.runs

    def to_json(self) -> dict[str, object]:
        return {"pp": list(self.pp), "tg": list(self.tg), "depths": list(self.depths),
                "concurrency": list(self.concurrency), "runs": self.runs,
                "latency_mode": self.latency_mode}


#: Short enough for a check after a change (a few minutes on two Sparks), long enough to
#: show decode at one stream and under load, and prefill with and without context.
QUICK = Sweep(pp=(2048,), tg=(32,), depths=(0, 4096), concurrency=(1, 4), runs=2)
#: The figures owners compare: single-stream decode, aggregate throughput at 8 and 32
#: concurrent requests, prefill at growing context depth.
STANDARD = Sweep(pp=(2048,), tg=(128,), depths=(0, 4096, 16384), concurrency=(1, 8, 32), runs=3)
PRESETS = {"quick": QUICK, "standard": STANDARD}

LIMITS = {"--pp": (1, 1_000_000), "--tg": (1, 1_000_000), "--depth": (0, 10_000_000),
          "--concurrency": (1, 1024), "--runs": (1, 100)}


def _check(option: str, values: tuple[int, ...]) -> tuple[int, ...]:
    lo, hi = LIMITS[option]
    if not values:
        raise UsageError("needs at least one value", option)
    for v in values:
        if not lo <= v <= hi:
            raise UsageError(f"{v} is out of range ({lo}..{hi})", option)
    return tuple(dict.fromkeys(values))


def parse_ints(option: str, text: str | None) -> tuple[int, ...]:
    """`0,4096` from the command line; None (not given) is empty, an empty value is an error."""
    if text is None:
        return ()
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise UsageError(f"expects comma-separated integers, got {text!r}", option) from None
    return _check(option, values)


def build(preset: str, pp: tuple[int, ...] = (), tg: tuple[int, ...] = (),
          depths: tuple[int, ...] = (), concurrency: tuple[int, ...] = (),
          runs: int | None = None) -> Sweep:
    """The preset, with any list given on the command line replacing the preset's."""
    if preset not in PRESETS:
        raise UsageError(f"unknown preset {preset!r} (choose from {', '.join(PRESETS)})")
    s = PRESETS[preset]
    if pp:
        s = replace(s, pp=_check("--pp", pp))
    if tg:
        s = replace(s, tg=_check("--tg", tg))
    if depths:
        s = replace(s, depths=_check("--depth", depths))
    if concurrency:
        s = replace(s, concurrency=_check("--concurrency", concurrency))
    if runs is not None:
        s = replace(s, runs=_check("--runs", (runs,))[0])
    return s
