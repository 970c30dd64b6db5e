"""Serving a recipe: its values go under the inventory's own keys (inventory > recipe > default),
flags merge option by option, and every value says where it came from."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from dgxcluster.errors import InventoryError, UsageError
from dgxcluster.inventory.load import Inventory, parse_inventory
from dgxcluster.recipes import catalog
from dgxcluster.recipes.merge import KEYS, apply, plain, resolve
from dgxcluster.serving.plan import config_hash, serve_command

NODES = """
nodes:
  - {name: n1, host: n1, fabric_ip: 10.0.0.1}
  - {name: n2, host: n2, fabric_ip: 10.0.0.2}
"""
GPT = catalog.get("gpt-oss-120b-2x")


def inv(serve: str = "", extra: str = "", env: dict[str, str] | None = None,
        tmp: Path | None = None) -> Inventory:
    text = NODES + (f"serve:\n{serve}" if serve else "") + extra
    src = None
    if tmp is not None:
        src = tmp / "cluster.yaml"
        src.write_text(text)
    return parse_inventory(text, "cluster.yaml", env or {}, source=src)


def test_the_recipe_fills_what_the_inventory_leaves_unset_and_says_so() -> None:
    m = apply(inv(), GPT, environ={})
    s = m.inventory.serve
    assert (s.model, s.revision, s.tensor_parallel_size, s.gpu_memory_utilization) == (
        "openai/gpt-oss-120b", GPT.revision, 2, 0.8)
    assert s.extra_args == GPT.flags  # the recipe's flags, first in serve.extra_args
    assert m.origins["serve.model"] == "recipe gpt-oss-120b-2x"
    assert m.origins["serve.tensor_parallel_size"] == "recipe gpt-oss-120b-2x"
    assert m.origins["serve.port"] == "default" and m.origins["serve.max_model_len"] == "default"
    assert m.origin(("serve", "extra_args")) == "recipe gpt-oss-120b-2x"


def test_the_inventory_wins_key_by_key_and_the_environment_is_named() -> None:
    i = inv("  model: my/model\n  gpu_memory_utilization: 0.7\n",
            env={"DGXCLUSTER_SERVE__MAX_MODEL_LEN": "2048"})
    m = apply(i, GPT, environ={"DGXCLUSTER_SERVE__MAX_MODEL_LEN": "2048"})
    s = m.inventory.serve
    assert (s.model, s.gpu_memory_utilization, s.max_model_len, s.tensor_parallel_size) == (
        "my/model", 0.7, 2048, 2)
    assert m.origins["serve.model"] == "inventory"
    assert m.origins["serve.gpu_memory_utilization"] == "inventory"
    assert m.origins["serve.max_model_len"] == "environment DGXCLUSTER_SERVE__MAX_MODEL_LEN"
    assert m.origins["serve.tensor_parallel_size"] == "recipe gpt-oss-120b-2x"


def test_a_flag_the_inventory_sets_drops_the_recipes_flag_for_that_option_only() -> None:
    i = inv("  extra_args: [--max-num-batched-tokens=4096, --enforce-eager]\n")
    m = apply(i, GPT, environ={})
    assert m.dropped == ("--max-num-batched-tokens", "8192")
    assert m.recipe_flags == ("--tool-call-parser", "openai", "--enable-auto-tool-choice")
    assert m.own_flags == ("--max-num-batched-tokens=4096", "--enforce-eager")
    assert m.inventory.serve.extra_args == [*m.recipe_flags, *m.own_flags]
    assert m.origins["serve.extra_args"] == "recipe gpt-oss-120b-2x + inventory"


def test_environment_variables_merge_name_by_name() -> None:
    recipe = GPT.model_copy(update={"env": {"VLLM_A": "1", "VLLM_B": "2"}})
    m = apply(inv(extra="container:\n  env: {VLLM_B: mine}\n"), recipe, environ={})
    assert m.inventory.container.env == {"VLLM_A": "1", "VLLM_B": "mine"}
    assert m.origins["container.env.VLLM_A"] == "recipe gpt-oss-120b-2x"
    assert m.origins["container.env.VLLM_B"] == "inventory"


def test_keys_this_inventory_lacks_are_served_only_when_they_ask_for_what_it_does_anyway() -> None:
    missing = [k for k in KEYS if k.path == ("serve", "executor")]
    assert missing and missing[0].implicit == "ray"
    apply(inv(), GPT, environ={})  # executor: ray, DP 1: served as is today
    native = GPT.model_copy(update={"executor": "native"})
    # the inventory has serve.executor now (issue 14): the key is merged like any other
    m = apply(inv(), native, environ={})
    assert m.inventory.serve.executor == "native"
    assert m.origins["serve.executor"] == "recipe gpt-oss-120b-2x"
    assert apply(inv("  executor: ray\n"), native, environ={}).inventory.serve.executor == "ray"
    # with the restart watcher too: native ranks have one per node (issue 17)
    healed = apply(inv("  restart: on-failure\n"), native, environ={}).inventory.serve
    assert (healed.executor, healed.restart) == ("native", "on-failure")


def test_a_merged_value_the_inventory_refuses_names_the_recipe() -> None:
    one = parse_inventory("nodes:\n  - {name: n1, host: n1, fabric_ip: 10.0.0.1}\n", "c.yaml", {})
    with pytest.raises(InventoryError) as e:
        apply(one, GPT, environ={})
    (path, msg, _), = e.value.problems
    assert path == "serve.tensor_parallel_size"
    assert "(from recipe gpt-oss-120b-2x)" in msg and "1 node" in msg


def test_start_recipe_beats_serve_recipe_and_the_config_hash_covers_it(tmp_path: Path) -> None:
    i = inv("  recipe: llama-3.3-70b-instruct-2x\n", tmp=tmp_path)
    by_inventory = resolve(i, environ={})
    assert by_inventory.recipe is not None and by_inventory.recipe.name == "llama-3.3-70b-instruct-2x"
    assert by_inventory.origins["serve.recipe"] == "inventory"
    by_option = resolve(i, "gpt-oss-120b-2x", environ={})
    assert by_option.inventory.serve.recipe == "gpt-oss-120b-2x"
    assert by_option.origins["serve.recipe"] == "start --recipe"
    assert by_option.inventory.serve.model == "openai/gpt-oss-120b"
    assert config_hash(by_option.inventory, "img") != config_hash(by_inventory.inventory, "img")


def test_a_recipe_file_in_the_inventory_is_found_beside_it(tmp_path: Path) -> None:
    doc = yaml.safe_load((Path(catalog.__file__).parent / "builtin" / "gpt-oss-120b-2x.yaml").read_text())
    doc["name"] = "mine"
    (tmp_path / "recipes").mkdir()
    (tmp_path / "recipes" / "mine.yaml").write_text(yaml.safe_dump(doc))
    m = resolve(inv("  recipe: recipes/mine.yaml\n", tmp=tmp_path), environ={})
    assert m.recipe is not None and m.recipe.name == "mine"
    assert serve_command(m.inventory)[2] == "openai/gpt-oss-120b"


def test_an_unknown_recipe_is_a_usage_error_naming_where_it_was_named() -> None:
    with pytest.raises(UsageError) as e:
        resolve(inv("  recipe: gpt-oss-120b\n"), environ={})
    assert str(e.value).startswith("serve.recipe: no recipe named 'gpt-oss-120b' (did you mean "
                                   "gpt-oss-120b-2x?)")
    with pytest.raises(UsageError, match=r"^--recipe: no recipe named 'nope'"):
        resolve(inv(), "nope", environ={})


def test_no_recipe_changes_nothing_and_still_says_where_values_came_from() -> None:
    i = inv("  model: a/b\n")
    m = resolve(i, environ={})
    assert m.inventory is i and m.recipe is None and m.recipe_flags == ()
    assert plain(i, {}).origins["serve.model"] == "inventory"
    assert m.origins["serve.gpu_memory_utilization"] == "default"
    assert i.serve.gpu_memory_utilization == 0.8  # the safe value NVIDIA's known issues call for
