"""Recipes: every built-in one validates, and its flags pass the argument table of the vLLM
release it names, beside what dgxcluster generates for it; bad recipes are refused by key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from dgxcluster.cli.recipe_cmd import generated_argv
from dgxcluster.errors import InventoryError, UsageError
from dgxcluster.recipes import catalog
from dgxcluster.recipes.check import check_recipe
from dgxcluster.recipes.importer import convert
from dgxcluster.vllmcli import snapshot
from dgxcluster.vllmcli.validate import errors
from tests.conftest import run_cli

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "recipes"
RECIPES = catalog.builtin()
GOOD = (Path(catalog.__file__).parent / "builtin" / "gpt-oss-120b-2x.yaml").read_text()


def test_the_starter_set_is_there() -> None:
    models = {r.model for r in RECIPES.values()}
    assert {"openai/gpt-oss-120b", "meta-llama/Llama-3.3-70B-Instruct", "Qwen/Qwen3-235B-A22B-FP8",
            "nvidia/Qwen3-235B-A22B-Instruct-2507-NVFP4", "zai-org/GLM-4.5-Air-FP8",
            "Qwen/Qwen3-0.6B"} <= models


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_every_recipe_validates_against_its_vllm_snapshot(name: str) -> None:
    recipe = RECIPES[name]
    assert recipe.vllm in snapshot.available()
    problems = check_recipe(recipe, generated_argv(recipe))
    assert [str(p) for p in errors(problems)] == []
    assert [str(p) for p in problems] == []  # no warnings either: recipes spell flags out
    assert len(recipe.source) > 40 and ("http" in recipe.source or "/" in recipe.source)


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_every_recipe_still_validates_in_every_later_vllm_snapshot(name: str) -> None:
    """So a base-image bump (26.05 -> 26.10 moves vLLM 0.20.1 -> 0.31.0) says which recipes break."""
    recipe = RECIPES[name]
    later = [v for v in snapshot.available()
             if snapshot.version_key(v) >= snapshot.version_key(recipe.min_vllm)]
    for version in later:
        problems = errors(check_recipe(recipe.model_copy(update={"vllm": version}), generated_argv(recipe)))
        assert [str(p) for p in problems] == [], version


def test_the_testbed_recipe_serves_the_testbeds_synthetic_model() -> None:
    import hashlib

    r = RECIPES["testbed-qwen3-0.6b"]
    assert r.revision == hashlib.sha1(r.model.encode()).hexdigest()  # scripts/testbed seed-model
    assert r.nodes == 2 and r.executor == "ray"


def bad(**changes: object) -> str:
    doc = yaml.safe_load(GOOD)
    doc.update(changes)
    return yaml.safe_dump(doc)


@pytest.mark.parametrize(("changes", "key", "text"), [
    ({"revision": "main"}, "revision", "full 40-hex commit"),
    ({"nodes": 4}, "", "tensor x pipeline x data parallel = 2, but nodes = 4"),
    ({"memory_gb": 96}, "memory_gb", "128 or 64"),
    ({"executor": "slurm"}, "executor", "'ray' or 'native'"),
    ({"env": {"HF_TOKEN": "hf_abcdefghijklmnopqrstuvwxyzABCD"}}, "env", "looks like a secret"),
    ({"colour": "blue"}, "colour", "unknown key"),
    ({"vllm": "latest"}, "vllm", "String should match pattern"),
])
def test_bad_recipes_are_refused_naming_the_key(changes: dict[str, object], key: str, text: str) -> None:
    with pytest.raises(InventoryError) as e:
        catalog.parse(bad(**changes), "r.yaml")
    assert any(p[0] == key and text in p[1] for p in e.value.problems), e.value.problems


def test_a_recipe_error_carries_its_line() -> None:
    with pytest.raises(InventoryError) as e:
        catalog.parse(GOOD.replace("memory_gb: 128", "memory_gb: 100"), "r.yaml")
    assert str(e.value).startswith("r.yaml:6: memory_gb:")


def test_a_recipe_flag_repeating_a_generated_one_is_refused() -> None:
    doc = yaml.safe_load(GOOD)
    doc["flags"] = ["--tensor-parallel-size", "4", "--swap-space", "4"]
    r = catalog.parse(yaml.safe_dump(doc), "r.yaml")
    msgs = [str(p) for p in errors(check_recipe(r, generated_argv(r)))]
    assert any("recipe gpt-oss-120b-2x: flags: --tensor-parallel-size: dgxcluster already passes" in m
               for m in msgs)
    assert any("has no option --swap-space" in m for m in msgs)


def test_unknown_recipe_names_get_a_did_you_mean() -> None:
    with pytest.raises(UsageError, match="did you mean gpt-oss-120b-2x"):
        catalog.get("gpt-oss-120b")


def test_import_converts_the_community_format() -> None:
    text = (FIXTURES / "spark-vllm-docker-style.yaml").read_text()
    doc = convert(text, "x.yaml", snapshot.load("0.20.1"))
    assert doc["name"] == "example-moe-fp8"
    assert (doc["nodes"], doc["tensor_parallel_size"], doc["executor"]) == (2, 2, "ray")
    assert doc["gpu_memory_utilization"] == 0.75 and doc["max_model_len"] == 32000
    assert doc["flags"] == ["--tool-call-parser", "hermes", "--enable-auto-tool-choice",
                            "--kv-cache-dtype", "fp8",
                            "--compilation-config", '{"cudagraph_mode":"piecewise"}']
    assert doc["env"] == {"VLLM_MARLIN_USE_ATOMIC_ADD": "1"}
    r = catalog.parse(yaml.safe_dump(doc), "converted")
    assert errors(check_recipe(r, generated_argv(r))) == []


@pytest.mark.parametrize(("text", "key", "why"), [
    ((FIXTURES / "with-mods.yaml").read_text(), "mods", "patches vLLM inside the image"),
    ("name: x\ncommand: python serve.py\n", "command", "must be `vllm serve MODEL"),
    ("name: x\ncommand: vllm serve m -tp {tp}\n", "command", "placeholder(s) tp have no value"),
    ("name: x\nsolo_only: true\ncommand: vllm serve m\n", "solo_only", "single-node"),
    ("name: x\nnot_theirs: 1\ncommand: vllm serve m\n", "not_theirs", "unknown key"),
])
def test_import_refuses_what_has_no_equivalent(text: str, key: str, why: str) -> None:
    with pytest.raises(InventoryError) as e:
        convert(text, "x.yaml", snapshot.load("0.20.1"))
    assert e.value.problems[0][0] == key and why in e.value.problems[0][1]


def test_recipe_cli_ls_show_and_import() -> None:
    p = run_cli("recipe", "ls", "--json", timeout=120)
    assert p.returncode == 0, p.stderr
    assert {r["name"] for r in json.loads(p.stdout)} == set(RECIPES)
    p = run_cli("recipe", "show", "gpt-oss-120b-2x", timeout=120)
    assert p.returncode == 0, p.stderr
    assert "model: openai/gpt-oss-120b" in p.stdout and "checked against vLLM 0.20.1: ok" in p.stdout
    p = run_cli("recipe", "show", "nope", timeout=120)
    assert p.returncode == 2 and "no recipe named 'nope'" in p.stderr
    p = run_cli("recipe", "import", str(FIXTURES / "with-mods.yaml"), timeout=120)
    assert p.returncode == 2 and "mods: patches vLLM inside the image" in p.stderr
    p = run_cli("recipe", "import", str(FIXTURES / "spark-vllm-docker-style.yaml"), timeout=120)
    assert p.returncode == 0, p.stderr
    assert yaml.safe_load(p.stdout)["model"] == "example-org/Example-MoE-FP8"
