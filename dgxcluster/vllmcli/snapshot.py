"""The committed snapshots of `vllm serve`'s argument table, one per supported vLLM release.

Each `snapshots/vllm-X.json` was produced by `scripts/vllm-cli-snapshot X` from vLLM's own
parser (its `produced` key says when and how). Loading one gives the option table and a parser
rebuilt from it (`dgxcluster.nodeside.vllm_argparse`), the same one the testbed's vLLM stand-in
parses its command line with.
"""

from __future__ import annotations

import argparse
import functools
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from dgxcluster.errors import UsageError
from dgxcluster.nodeside import vllm_argparse

_NAME = re.compile(r"^vllm-(.+)\.json$")


def version_key(v: str) -> tuple[int | str, ...]:
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"[.+-]", v))


def available() -> list[str]:
    """vLLM versions with a committed snapshot, oldest first."""
    names = (m.group(1) for f in resources.files(__package__).joinpath("snapshots").iterdir()
             if (m := _NAME.match(f.name)))
    return sorted(names, key=version_key)


@dataclass(frozen=True)
class Option:
    """One action of `vllm serve`'s parser, as the snapshot records it."""

    dest: str
    option_strings: tuple[str, ...]
    kind: str
    nargs: int | str | None
    type: Mapping[str, Any] | None
    choices: tuple[str, ...] | None
    deprecated: bool
    help: str
    default: Any

    @property
    def flag(self) -> str:
        """The long spelling (what messages name)."""
        longs = [s for s in self.option_strings
                 if s.startswith("--") and not s.startswith(("--no-", "--disable-"))]
        return (longs or list(self.option_strings) or [self.dest])[0]

    @property
    def takes_value(self) -> bool:
        return self.nargs != 0 and self.kind not in (
            "store_true", "store_false", "store_const", "append_const", "count", "help", "version")


@dataclass(frozen=True)
class Snapshot:
    """`vllm serve`'s command line for one vLLM release."""

    version: str
    table: Mapping[str, Any] = field(repr=False)

    @functools.cached_property
    def options(self) -> dict[str, Option]:
        """By dest."""
        out = {}
        for o in self.table["options"]:
            if o["kind"] in ("help", "version"):
                continue
            out[o["dest"]] = Option(
                dest=o["dest"], option_strings=tuple(o["option_strings"]), kind=o["kind"],
                nargs=o["nargs"], type=o["type"],
                choices=tuple(o["choices"]) if o["choices"] is not None else None,
                deprecated=bool(o["deprecated"]), help=o.get("help") or "", default=o.get("default"))
        return out

    @functools.cached_property
    def flags(self) -> dict[str, Option]:
        """Every spelling argparse knows (`--no-x` forms of boolean options included)."""
        return {s: opt for opt in self.options.values() for s in opt.option_strings}

    @functools.cached_property
    def parser(self) -> argparse.ArgumentParser:
        """The rebuilt `vllm` parser; it raises `ParseError` instead of exiting."""
        top, _ = vllm_argparse.build(self.table, raise_errors=True)
        return top

    @functools.cached_property
    def serve_parser(self) -> argparse.ArgumentParser:
        return vllm_argparse.build(self.table, raise_errors=True)[1]

    @property
    def produced(self) -> Mapping[str, Any]:
        produced: Mapping[str, Any] = self.table.get("produced", {})
        return produced


@functools.cache
def load(version: str) -> Snapshot:
    """The snapshot of vLLM `version`; a UsageError lists the ones there are."""
    f = resources.files(__package__).joinpath("snapshots").joinpath(f"vllm-{version}.json")
    if not re.fullmatch(r"\d+(\.\d+)*([.+-][0-9A-Za-z.]+)?", version) or not f.is_file():
        have = ", ".join(available()) or "none"
        raise UsageError(f"no snapshot of vLLM {version}'s command line (have: {have}); "
                         f"make one with scripts/vllm-cli-snapshot {version}", "vllm version")
    table = json.loads(f.read_text())
    return Snapshot(version=table["vllm_version"], table=table)


def newest() -> Snapshot:
    return load(available()[-1])


def release(v: str) -> tuple[int, ...]:
    """The numeric release of a version string: `0.23.1rc1.dev5+g1a2b` -> (0, 23, 1)."""
    m = re.match(r"^v?(\d+(?:\.\d+)*)", v.strip())
    return tuple(int(p) for p in m.group(1).split(".")) if m else ()


@dataclass(frozen=True)
class Choice:
    """The snapshot flags of vLLM `wanted` are checked against, and what the user must know
    when it is not that release's own (`note`; "" for an exact match)."""

    snapshot: Snapshot
    wanted: str | None
    note: str = ""


def for_version(wanted: str | None, where: str = "") -> Choice:
    """vLLM `wanted`'s snapshot; else the nearest older one, with a note saying so; the newest
    when the release is unknown. UsageError when every snapshot is newer than `wanted` (flags
    removed since would be refused, flags it lacks let through: no answer is better)."""
    have = available()
    if wanted in have:
        return Choice(load(wanted), wanted)
    said = f" ({where})" if where else ""
    make = f"`scripts/vllm-cli-snapshot {wanted}` makes one" if wanted else ""
    if wanted is None:
        return Choice(load(have[-1]), None, f"the image's vLLM release is not known{said}: flags "
                      f"checked against vLLM {have[-1]}, the newest snapshot; set "
                      "image.build_args.VLLM_VERSION to the base image's vLLM release")
    older = [v for v in have if release(v) and release(v) <= release(wanted)]
    if not release(wanted) or not older:
        raise UsageError(f"no snapshot of vLLM {wanted}'s command line, nor of an older release "
                         f"(have: {', '.join(have)}): {make}; or start with --skip-flag-check "
                         "to pass the flags unchecked", where or "vllm version")
    return Choice(load(older[-1]), wanted, f"no snapshot of vLLM {wanted}{said}: flags checked "
                  f"against vLLM {older[-1]}, the nearest older release (have: {', '.join(have)}); "
                  f"a flag added since may be refused, one removed since let through; {make}")
