"""Fuzzing every command's options, in-process (typer's CliRunner on the real app).

Only values that must be rejected are generated: bad numbers (text, below the minimum,
NaN), unknown options, flags given a value, unknown --node/--from names, bad image names,
strategies, revisions, model ids, log formats, inventory paths. The inventory's nodes are
127.0.0.1/127.0.0.2 port 1, which refuse at once: a value wrongly accepted would try to
connect and exit 3, failing the test.

Properties: never a traceback; exit 2; the message names the option (or argument).
The option table is checked against the app itself, so a new option without a fuzz
strategy fails `test_every_option_has_a_strategy`.
"""

from __future__ import annotations

import math
import os
import re
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import structlog
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from typer.main import get_command
from typer.testing import CliRunner

from dgxcluster.bench.presets import parse_ints
from dgxcluster.bench.run import split_url
from dgxcluster.cli.main import app
from dgxcluster.core.durations import parse_duration
from dgxcluster.errors import UsageError
from dgxcluster.inventory.schema import ImageSettings
from dgxcluster.models.repoid import RepoId, check_revision
from dgxcluster.recipes import catalog as recipe_catalog
from dgxcluster.vllmcli import snapshot as vllm_snapshot
from tests.hostile import HOSTILE

#: Hundreds of generated examples: minutes on a loaded 2-core machine, not seconds.
pytestmark = pytest.mark.timeout(900)

NODES = ("spark1", "spark2")
INVENTORY = """\
cluster: fz
nodes:
  - {name: spark1, host: 127.0.0.1, port: 1, fabric_ip: 10.99.0.1}
  - {name: spark2, host: 127.0.0.2, port: 1, fabric_ip: 10.99.0.2}
ssh: {connect_timeout: 1, known_hosts: kh}
image: {context: ctx}
serve: {model: Qwen/Qwen3-0.6B}
"""
STATS: Counter[str] = Counter()
PHASES = [Phase.explicit, Phase.reuse, Phase.generate] + (
    [Phase.shrink] if os.environ.get("DGXC_FUZZ_SHRINK") else [])
SETTINGS = settings(deadline=None, database=None, phases=PHASES, print_blob=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@dataclass(frozen=True)
class Param:
    command: tuple[str, ...]
    name: str
    opts: tuple[str, ...]
    kind: str  # option | argument
    annotation: Any
    is_flag: bool
    count: bool
    min: float | None

    @property
    def key(self) -> str:
        return f"{' '.join(self.command) or '(global)'} {self.opts[0]}"


def _params() -> list[Param]:
    out: list[Param] = []

    def walk(cmd: Any, path: tuple[str, ...]) -> None:
        for p in cmd.params:
            out.append(Param(path, p.name, tuple(p.opts), p.param_type_name,
                             p.type_descriptor.annotation, bool(getattr(p, "is_flag", False)),
                             bool(getattr(p, "count", False)), getattr(p, "min", None)))
        for name, sub in (getattr(cmd, "commands", None) or {}).items():
            walk(sub, path + (name,))

    walk(get_command(app), ())
    return out


PARAMS = _params()
COMMANDS = sorted({p.command for p in PARAMS if p.command} |
                  {(n,) for n in (getattr(get_command(app), "commands", None) or {})
                   if not getattr(get_command(app).commands[n], "commands", None)})
#: What a command needs after the option under test to be a complete command line.
TAIL: dict[tuple[str, ...], list[str]] = {
    ("exec",): ["--", "true"],
    ("model", "sync"): ["Qwen/Qwen3-0.6B"],
    ("model", "pull"): ["Qwen/Qwen3-0.6B"],
    ("recipe", "import"): [str(Path(__file__).resolve().parents[1] / "fixtures" / "recipes"
                               / "spark-vllm-docker-style.yaml")],
}


def _rejected(check: Callable[[str], object]) -> Callable[[str], bool]:
    def bad(value: str) -> bool:
        try:
            check(value)
        except (UsageError, ValueError):
            return True
        return False
    return bad


texts = st.one_of(st.sampled_from(sorted(HOSTILE.values())), st.text(max_size=60),
                  st.text(alphabet="-./:;$`'\" \\", max_size=12)).map(lambda s: s.replace("\0", ""))
node_names = texts.filter(lambda s: s not in NODES)
def _no_such_path(s: str) -> bool:
    """No file of that name (a name too long for the file system is none either: Python 3.11's
    `Path.exists` raises ENAMETOOLONG where 3.12 answers False)."""
    try:
        return not Path(s).exists()
    except OSError:
        return True


VALUES: dict[str, st.SearchStrategy[str]] = {
    "(global) --inventory": st.just("<path>"),  # drawn by the test (needs the temp dir)
    "(global) --log-format": texts.filter(lambda s: s not in ("console", "json")),
    "exec --node": node_names,
    "build --node": node_names,
    "verify-ib --node": node_names,
    "fabric plan --node": node_names,
    "fabric apply --node": node_names,
    "model sync --from": node_names,
    "logs --node": node_names,
    "logs --since": texts.filter(_rejected(parse_duration)),
    "smoke --prompt": st.text(alphabet=" \t\n", max_size=5),
    "build --image": texts.filter(_rejected(lambda s: ImageSettings(name=s))),
    "build --strategy": texts.filter(lambda s: s not in ("each", "distribute")),
    "start --executor": texts.filter(lambda s: s.lower() not in ("ray", "native")),
    "model pull --revision": texts.filter(_rejected(check_revision)),
    "model sync model": texts.filter(_rejected(RepoId.parse)),
    "model pull model": texts.filter(_rejected(RepoId.parse)),
    "bench --url": texts.filter(_rejected(split_url)),
    "bench --book-url": texts.filter(_rejected(split_url)),
    "bench --pp": texts.filter(_rejected(lambda s: parse_ints("--pp", s))),
    "bench --tg": texts.filter(_rejected(lambda s: parse_ints("--tg", s))),
    "bench --depth": texts.filter(_rejected(lambda s: parse_ints("--depth", s))),
    "bench --concurrency": texts.filter(_rejected(lambda s: parse_ints("--concurrency", s))),
    "bench --api-key-env": st.from_regex(r"DGXC_FUZZ_UNSET_[A-Z]{0,8}", fullmatch=True),
    "bench --compare": texts.map(lambda s: f"/nonexistent-dgxc-fuzz/d/{s}"),
    "metrics targets --format": texts.filter(lambda s: s not in ("yaml", "file-sd")),
    "metrics targets --output": texts.filter(lambda s: ".." not in s).map(
        lambda s: f"/nonexistent-dgxc-fuzz/d/{s}"),
    "recipe show name": texts.filter(_rejected(lambda s: recipe_catalog.get(s))),
    "start --recipe": texts.filter(_no_such_path).filter(
        _rejected(lambda s: recipe_catalog.get(s, "--recipe"))),
    "recipe import file": texts.filter(_no_such_path),
    "recipe import --vllm": texts.filter(_rejected(vllm_snapshot.load)),
    "recipe import --output": texts.map(lambda s: f"/nonexistent-dgxc-dir/{s}/out.yaml"),
    "warm start --idle": texts.filter(_rejected(parse_duration)),
}
#: Parameters for which no rejected value exists (anything is a valid command, count or flag).
NO_BAD_VALUE = {"exec command", "logs --output",  # any folder name can be made
                "bench --output", "bench --model", "bench --tokenizer"}  # names the server judges


def bad_number(p: Param) -> st.SearchStrategy[str]:
    lo = p.min if p.min is not None else -math.inf
    integer = p.annotation is int

    def not_a_number(s: str) -> bool:
        try:
            int(s) if integer else float(s)
        except ValueError:
            return True
        return False

    below = (st.integers(max_value=math.ceil(lo) - 1).map(str) if integer and lo > -math.inf
             else st.floats(max_value=lo, exclude_max=True).map(repr) if lo > -math.inf
             else st.nothing())
    return st.one_of(texts.filter(not_a_number), below,
                     st.just("nan") if not integer else st.nothing())


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="dgxc-fuzzcli-") as d:
        root = Path(d)
        (root / "ctx").mkdir()
        (root / "ctx" / "Dockerfile").write_text("FROM scratch\n")
        (root / "kh").write_text("")
        (root / "inv.yaml").write_text(INVENTORY)
        # `logs` checks its default ./dgxcluster-logs first: run where anyone may write
        old = os.getcwd()
        os.chdir(root)
        try:
            yield root
        finally:
            os.chdir(old)
    structlog.reset_defaults()


@pytest.fixture(scope="module", autouse=True)
def _report_stats() -> Iterator[None]:
    yield
    out = os.environ.get("DGXC_FUZZ_STATS")
    if out:
        with open(out, "a") as fh:
            for k, v in sorted(STATS.items()):
                fh.write(f"cli {k} {v}\n")


def _clean_env() -> dict[str, str | None]:
    env: dict[str, str | None] = {k: None for k in os.environ if k.upper().startswith("DGXCLUSTER_")}
    env.update({"COLUMNS": "400", "HF_TOKEN": None})
    return env


def invoke(argv: list[str]) -> tuple[int, str]:
    res = CliRunner().invoke(app, argv, env=_clean_env())
    if res.exception is not None and not isinstance(res.exception, SystemExit):
        import traceback

        tb = "".join(traceback.format_exception(res.exception))
        pytest.fail(f"{argv!r}: uncaught exception (a traceback for the user):\n{tb}")
    text = res.stderr + res.stdout
    assert "Traceback" not in text
    # rich draws click's errors in a box: read it as plain words
    return res.exit_code, norm(re.sub(r"[│╭╮╰╯─]", " ", text))


def norm(text: str) -> str:
    return " ".join(text.split())


def test_every_option_has_a_strategy() -> None:
    """A new option must come with values that prove it is validated (or be listed as free)."""
    missing = []
    for p in PARAMS:
        numeric = p.annotation in (int, float) and not p.count
        if p.is_flag or p.count or numeric or p.key in VALUES or p.key in NO_BAD_VALUE:
            continue
        missing.append(p.key)
    assert missing == [], f"no fuzz strategy for: {missing}"


@settings(SETTINGS, max_examples=350)
@given(data=st.data())
def test_bad_option_value_exits_2_naming_the_option(workdir: Path, data: st.DataObject) -> None:
    candidates = [p for p in PARAMS if not p.is_flag and not p.count and p.key not in NO_BAD_VALUE]
    p = data.draw(st.sampled_from(candidates), label="param")
    inv = ["-i", str(workdir / "inv.yaml")]
    if p.key == "(global) --inventory":
        value = data.draw(st.one_of(
            texts.filter(lambda s: s and "\0" not in s).map(lambda s: str(workdir / "none" / s)),
            st.just(str(workdir)), st.just("/"), st.integers(256, 5000).map(lambda n: "a" * n)),
            label="path")
        code, err = invoke(["-i", value, "nodes"])
        assert code == 2, err
        assert "error:" in err and (norm(value[:40]) in err or norm(repr(value)[:40]) in err), err
        STATS["bad-inventory-path"] += 1
        return
    if p.annotation in (int, float):
        value = data.draw(bad_number(p), label="number")
        kind = "bad-number"
    else:
        value = data.draw(VALUES[p.key], label="value")
        kind = "bad-value"
    if p.kind == "argument":
        argv = [*inv, *p.command, "--", value] if value.startswith("-") else [*inv, *p.command, value]
        names: tuple[str, ...] = (p.name.upper(),)
    else:
        arg = f"{p.opts[0]}={value}" if p.opts[0].startswith("--") else f"{p.opts[0]}{value}"
        argv = [arg, *inv, "nodes"] if not p.command else [*inv, *p.command, arg, *TAIL.get(p.command, [])]
        names = p.opts
    code, err = invoke(argv)
    assert code == 2, (argv, err)
    assert any(norm(n) in err for n in names), (argv, err)
    STATS[f"{kind} {p.key}"] += 1


@settings(SETTINGS, max_examples=200)
@given(data=st.data())
def test_unknown_option_or_flag_with_a_value_exits_2_naming_it(workdir: Path,
                                                               data: st.DataObject) -> None:
    command = data.draw(st.sampled_from([(), *COMMANDS]), label="command")
    known = {o for p in PARAMS if p.command == command for o in p.opts} | {"--help", "-h"}
    flags = [p for p in PARAMS if p.command == command and p.is_flag and not p.count]
    inv = ["-i", str(workdir / "inv.yaml")]
    if flags and data.draw(st.booleans(), label="flag-with-value"):
        flag = data.draw(st.sampled_from(flags), label="flag").opts[0]
        opt = f"{flag}={data.draw(texts, label='value')}"
        name = flag
        STATS["flag-with-value"] += 1
    else:
        name = data.draw(st.one_of(
            st.from_regex(r"--[a-z][a-z0-9-]{0,20}", fullmatch=True),
            st.sampled_from(["--x;id", "--$(id)", "--`id`", "--über", "--a b"]),
            st.from_regex(r"-[A-Za-z]", fullmatch=True)).filter(lambda o: o not in known),
            label="option")
        opt = name
        STATS["unknown-option"] += 1
    argv = [opt, *inv, "nodes"] if not command else [*inv, *command, opt, *TAIL.get(command, [])]
    code, err = invoke(argv)
    assert code == 2, (argv, err)
    assert norm(name) in err, (argv, err)
