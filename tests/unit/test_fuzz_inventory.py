"""Fuzzing the inventory loader through the real CLI, in-process (`dgxcluster -i FILE nodes`,
which connects nowhere): mutated copies of inventory/example.yaml (wrong types, unknown
keys, missing keys, duplicate keys, hostile strings, deep nesting, huge values), random
text, and random DGXCLUSTER_* overrides.

Properties: never a traceback; exit 0 (the mutation happened to be valid) or exit 2;
on exit 2 every message line names the file, and one names the key path that was
mutated (or a key that refers to it, e.g. `head` when a node was renamed), or the
environment variable.
"""

from __future__ import annotations

import copy
import os
import re
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
import yaml
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from dgxcluster.cli.main import app
from dgxcluster.inventory.schema import InventoryModel
from dgxcluster.inventory.yamlfile import format_path
from tests.hostile import HOSTILE

#: Hundreds of generated examples: minutes on a loaded 2-core machine, not seconds.
pytestmark = pytest.mark.timeout(900)

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "inventory" / "example.yaml"
BASE: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text())
BASE["fabric"]["nccl_env"] = {"NCCL_DEBUG": "WARN"}
BASE["image"]["build_args"] = {"BASE_IMAGE": "nvcr.io/nvidia/vllm:26.05-py3"}
BASE["container"]["env"] = {"HF_HUB_OFFLINE": "0"}
BASE["container"]["extra_args"] = ["--pids-limit", "4096"]
BASE["serve"]["extra_args"] = ["--enable-prefix-caching"]
BASE["secrets"]["file"] = "secrets.env"
BASE["ssh"]["identity_file"] = "id_ed25519"
BASE["ssh"]["known_hosts"] = "known_hosts"

STATS: Counter[str] = Counter()
#: No shrinking unless asked (DGXC_FUZZ_SHRINK=1): each example runs the CLI, and shrinking a
#: failure can take minutes; the failing example is printed either way.
PHASES = [Phase.explicit, Phase.reuse, Phase.generate] + (
    [Phase.shrink] if os.environ.get("DGXC_FUZZ_SHRINK") else [])
SETTINGS = settings(deadline=None, database=None, phases=PHASES, print_blob=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _paths(value: Any, path: tuple[str | int, ...] = ()) -> Iterator[tuple[str | int, ...]]:
    if path:
        yield path
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _paths(v, path + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _paths(v, path + (i,))


def _get(doc: Any, path: tuple[str | int, ...]) -> Any:
    for part in path:
        doc = doc[part]
    return doc


PATHS = sorted(_paths(BASE), key=format_path)
REQUIRED = [("nodes",), ("nodes", 0, "name"), ("nodes", 0, "host"), ("nodes", 1, "fabric_ip")]
#: Keys whose validity depends on other keys: mutating one may be reported at the other.
CROSS = {
    "nodes": ("head", "image.build_node", "nodes", "serve.tensor_parallel_size"),
    "ray.port": ("ray.dashboard_port", "serve.port"),  # a port clash is named at one of them
    "ray.dashboard_port": ("ray.port", "serve.port"),
    "serve.port": ("ray.port", "ray.dashboard_port"),
    "ray.num_gpus": ("serve.tensor_parallel_size",),
    "serve.pipeline_parallel_size": ("serve.tensor_parallel_size",),
    "fabric.rails": ("nodes",),
    "secrets.env": ("container.env", "fabric.nccl_env", "image.build_args"),
    "head": ("head",),
    "image.build_node": ("image.build_node",),
}

hostile_text = st.one_of(
    st.sampled_from(sorted(HOSTILE.values())),
    st.text(max_size=40),
    st.text(alphabet=st.characters(codec="utf-8"), min_size=1, max_size=20).map(lambda s: "-" + s),
)
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), hostile_text,
    st.sampled_from([10**30, -(10**30), 2**63, -1, 0, 65536, 10**4000]),
    st.floats(allow_nan=True, allow_infinity=True),
)
junk = st.recursive(scalars, lambda c: st.lists(c, max_size=4)
                    | st.dictionaries(st.text(max_size=12), c, max_size=4), max_leaves=8)


def _deep(depth: int) -> Any:
    value: Any = "bottom"
    for i in range(depth):
        value = [value] if i % 2 else {"k": value}
    return value


deep_values = st.integers(min_value=33, max_value=90).map(_deep)

#: Messages about the document as a whole, which name no key.
DOCUMENT_LEVEL = ("nested deeper", "more than", "not valid YAML", "not a valid value", "larger than",
                  "top level", "file is empty", "keys must be strings")


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="dgxc-fuzz-") as d:
        yield Path(d)
    structlog.reset_defaults()


@pytest.fixture(scope="module", autouse=True)
def _report_stats() -> Iterator[None]:
    yield
    out = os.environ.get("DGXC_FUZZ_STATS")
    if out:
        with open(out, "a") as fh:
            for k, v in sorted(STATS.items()):
                fh.write(f"inventory {k} {v}\n")


def _clean_env() -> dict[str, str | None]:
    return {k: None for k in os.environ if k.upper().startswith("DGXCLUSTER_")}


def invoke(file: Path, env: dict[str, str] | None = None) -> tuple[int, str]:
    """`dgxcluster -i FILE nodes --json` in-process; fails the test on any uncaught exception."""
    runner = CliRunner()
    res = runner.invoke(app, ["-i", str(file), "nodes", "--json"],
                        env={**_clean_env(), "COLUMNS": "400", **(env or {})})
    if res.exception is not None and not isinstance(res.exception, SystemExit):
        import traceback

        tb = "".join(traceback.format_exception(res.exception))
        pytest.fail(f"uncaught exception (a traceback for the user):\n{tb}")
    assert "Traceback" not in res.stderr + res.stdout
    return res.exit_code, res.stderr


def _named(stderr: str, key: str, deeper: bool = True) -> bool:
    """stderr names `key` as a problem's key path (or a key below it)."""
    follow = r"(: |\.|\[)" if deeper else ": "
    return re.search(re.escape(": " + key) + follow, stderr) is not None


def related(stderr: str, mutated: tuple[str | int, ...]) -> bool:
    """A problem is reported at the mutated key, below it, at one of its parents, or at a key
    that refers to it (CROSS)."""
    if _named(stderr, format_path(mutated)):
        return True
    if any(_named(stderr, format_path(mutated[:k]), deeper=False) for k in range(1, len(mutated))):
        return True
    shown = format_path(mutated)
    for prefix, others in CROSS.items():
        under = shown == prefix or shown.startswith((prefix + ".", prefix + "["))
        if under and any(_named(stderr, o) for o in others):
            return True
    return False


def check_rejection(code: int, stderr: str, file: Path, mutated: list[tuple[str | int, ...]],
                    must_fail: bool) -> None:
    if must_fail:
        assert code == 2, stderr
    assert code in (0, 2), stderr
    if code == 0:
        STATS["accepted"] += 1
        return
    STATS["rejected"] += 1
    assert stderr.startswith(f"error: {file}"), stderr
    if any(related(stderr, m) for m in mutated):
        return
    assert any(w in stderr for w in DOCUMENT_LEVEL), (mutated, stderr)


def write(workdir: Path, doc: Any) -> Path:
    f = workdir / "inv.yaml"
    f.write_text(yaml.safe_dump(doc, allow_unicode=True, sort_keys=False, width=10**6))
    return f


def _round_trips(key: str) -> bool:
    """PyYAML's dumper writes some keys it cannot read back as written (NEL, U+0085, is
    folded to a space inside a quoted key), so a mutated key is only useful when it survives
    the writer: otherwise the loader rightly names a different key than the one drawn."""
    text = yaml.safe_dump({key: 1}, allow_unicode=True, width=10**6)
    return bool(yaml.safe_load(text) == {key: 1})


def _set(doc: Any, path: tuple[str | int, ...], value: Any) -> None:
    _get(doc, path[:-1])[path[-1]] = value


@settings(SETTINGS, max_examples=450)
@given(data=st.data())
def test_mutated_inventory_is_loaded_or_refused_naming_the_key(workdir: Path, data: st.DataObject) -> None:
    doc = copy.deepcopy(BASE)
    mutated: list[tuple[str | int, ...]] = []
    #: the mutations that must make the load fail, unless a later one replaced them (or a key
    #: above them) again: an unknown key in `ssh` is gone once `ssh` is replaced by `{}`
    failing: list[tuple[str | int, ...]] = []
    for _ in range(data.draw(st.integers(1, 3), label="mutations")):
        op = data.draw(st.sampled_from(["replace", "replace", "unknown-key", "missing", "deep"]), label="op")
        if op in ("replace", "deep"):
            paths = list(_paths(doc))
            path = data.draw(st.sampled_from(paths), label="path")
            value = data.draw(junk if op == "replace" else deep_values, label="value")
            _set(doc, path, value)
            failing = [f for f in failing if f[:len(path)] != path]
            if op == "deep":
                failing.append(path)
            STATS[f"mutation-{op}"] += 1
        elif op == "unknown-key":
            maps = [p for p in _paths(doc) if isinstance(_get(doc, p), dict)] + [()]
            path = data.draw(st.sampled_from(maps), label="mapping")
            target = _get(doc, path)
            taken = set(target) | set(InventoryModel.model_fields)
            key = data.draw(st.text(min_size=1, max_size=20).filter(
                lambda k, taken=taken: k not in taken and _round_trips(k)), label="key")
            # free-form maps (env, build_args, ulimits) take any key; their values are checked
            free = path[-1:] in (("env",), ("nccl_env",), ("build_args",), ("ulimits",))
            target[key] = data.draw(junk, label="value")
            path = path + (key,)
            if not free:
                failing.append(path)
            STATS["mutation-unknown-key"] += 1
        else:
            path = data.draw(st.sampled_from(REQUIRED), label="required")
            try:
                parent = _get(doc, path[:-1])
                if not isinstance(parent, dict) or path[-1] not in parent:
                    continue
            except (KeyError, IndexError, TypeError):
                continue
            del parent[path[-1]]
            failing.append(path)
            STATS["mutation-missing"] += 1
        mutated.append(path)
    must_fail = bool(failing)
    file = write(workdir, doc)
    code, err = invoke(file)
    check_rejection(code, err, file, mutated, must_fail)
    if must_fail:
        STATS["must-fail"] += 1


@settings(SETTINGS, max_examples=120)
@given(data=st.data())
def test_duplicate_key_is_refused_with_its_line(workdir: Path, data: st.DataObject) -> None:
    text = yaml.safe_dump(BASE, sort_keys=False, width=10**6)
    lines = text.splitlines()
    candidates = [i for i, ln in enumerate(lines) if re.match(r"^\s*[a-z_]+:", ln)]
    i = data.draw(st.sampled_from(candidates), label="line")
    key = lines[i].split(":")[0].strip()
    def indent_of(line: str) -> int:
        return len(line) - len(line.lstrip())

    # the duplicate goes at the same indentation, after the original's own block
    indent = indent_of(lines[i])
    opens_block = lines[i].rstrip().endswith(":")
    j = i + 1
    while j < len(lines) and (indent_of(lines[j]) > indent or (
            opens_block and indent_of(lines[j]) == indent and lines[j].lstrip().startswith("- "))):
        j += 1
    dup = " " * indent + f"{key}: {data.draw(st.sampled_from(['1', 'x', '[]', '{}']), label='v')}"
    lines.insert(j, dup)
    file = workdir / "dup.yaml"
    file.write_text("\n".join(lines) + "\n")
    code, err = invoke(file)
    assert code == 2, err
    assert f"duplicate key {key!r}" in err, err
    assert re.search(rf"{re.escape(str(file))}:{j + 1}: ", err), err
    STATS["duplicate-key"] += 1


@settings(SETTINGS, max_examples=150)
@given(text=st.one_of(st.text(max_size=300),
                      st.text(alphabet="{}[]:,-&*!|>'\"#%@`\n \t?abcn0123456789.~", max_size=120)))
def test_random_text_never_crashes(workdir: Path, text: str) -> None:
    file = workdir / "text.yaml"
    file.write_text(text, encoding="utf-8", errors="surrogatepass")
    code, err = invoke(file)
    assert code in (0, 2), err  # 0 cannot happen without a valid nodes list, but is no crash
    if code == 2:
        assert all(ln.startswith((f"error: {file}", str(file))) for ln in err.splitlines()), err
    STATS["random-text"] += 1


SETTING_NAMES = sorted({"__".join(str(x) for x in p).upper() for p in PATHS
                        if not any(isinstance(x, int) for x in p)})


@settings(SETTINGS, max_examples=150)
@given(name=st.one_of(st.sampled_from(SETTING_NAMES),
                      st.from_regex(r"[A-Z][A-Z_]{0,12}(__[A-Z_]{1,12})?", fullmatch=True)),
       value=st.one_of(st.sampled_from(sorted(HOSTILE.values())), st.text(min_size=1, max_size=30),
                       st.sampled_from(['{"bad', "[1,", "null", "{}", "[]", "-1", "1e999", "nan"])))
def test_environment_override_is_applied_or_refused_naming_the_variable(
        workdir: Path, name: str, value: str) -> None:
    value = value.replace("\0", "")
    if not value:
        return
    file = write(workdir, BASE)
    var = f"DGXCLUSTER_{name}"
    if var in ("DGXCLUSTER_INVENTORY", "DGXCLUSTER_LOG_DIR", "DGXCLUSTER_LOG_FORMAT"):
        return
    code, err = invoke(file, env={var: value})
    assert code in (0, 2), err
    if code == 2:
        assert var in err, err
        STATS["env-rejected"] += 1
    else:
        STATS["env-accepted"] += 1
