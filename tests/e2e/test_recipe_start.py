"""Recipes and the vLLM flag check on the 2-node docker testbed: `start --recipe` serves the
testbed's recipe (its flags parsed by the vLLM stand-in with vLLM 0.20.1's own argument
table), a removed flag is refused before any node is touched (no SSH login on any node), and a
model that cannot fit is refused at preflight with the numbers. The stand-in refusing a flag
let through with --skip-flag-check is in tests/e2e/test_faults.py (with the leak check).
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import Testbed, flat, run_cli
from tests.leaks import STATE

pytestmark = [pytest.mark.e2e, pytest.mark.docker]

ENV = {"HF_TOKEN": f"hf_recipe{uuid.uuid4().hex}",
       "DGXCLUSTER_CONTAINER__ENV": json.dumps({"DGXCLUSTER_STANDIN_LOAD_S": "0"})}
RECIPE = "testbed-qwen3-0.6b"
REVISION = "01e764fa8f3fa158a7b52b2a24b19e694d6dfc09"  # sha1("Qwen/Qwen3-0.6B"): seed-model's


@pytest.fixture(scope="module")
def tb(testbed_docker: Testbed) -> Iterator[Testbed]:
    testbed_docker.ensure_image()
    testbed_docker.ensure_model()
    assert testbed_docker.dgx("stop", env=ENV).returncode == 0
    yield testbed_docker
    testbed_docker.dgx("stop", env=ENV)


def variant(tb: Testbed, name: str, serve: str) -> Path:
    """The testbed's inventory with `serve:` keys added, beside it (relative paths hold)."""
    path = tb.inventory.with_name(f"{tb.inventory.stem}-{name}.yaml")
    text = tb.inventory.read_text()
    assert "\nserve:\n" in text
    path.write_text(text.replace("\nserve:\n", f"\nserve:\n{serve}", 1))
    return path


def logins(tb: Testbed) -> dict[str, int]:
    return {n: len(tb.tb("logins", n).stdout.splitlines()) for n in tb.nodes}


def test_start_recipe_dry_run_says_where_each_value_came_from(tb: Testbed) -> None:
    t = time.monotonic()
    r = tb.dgx("start", "--recipe", RECIPE, "--dry-run", env={**ENV, "COLUMNS": "300"})
    took = time.monotonic() - t
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert f"# serve settings (inventory > recipe {RECIPE} > default):" in out
    assert re.search(rf"^  recipe +{RECIPE}  \(start --recipe\)$", out, re.M), out
    assert re.search(r"^  model +Qwen/Qwen3-0\.6B  \(inventory\)$", out, re.M), out
    assert re.search(rf"^  revision +{REVISION}  \(recipe {RECIPE}\)$", out, re.M), out
    assert re.search(rf"^  tensor_parallel_size +2  \(recipe {RECIPE}\)$", out, re.M), out
    # the testbed's inventory sets max_model_len (4096) itself: the inventory's key wins
    assert re.search(r"^  max_model_len +4096  \(inventory\)$", out, re.M), out
    assert re.search(r"^  port +8000  \(default\)$", out, re.M), out
    assert re.search(r'^  extra_args +\["--enable-prefix-caching", "--max-num-seqs", "8"\] '
                     rf"\(recipe {RECIPE}\) \+ \[\] \(serve\.extra_args\)$", out, re.M), out
    assert "# vLLM flags checked against vLLM 0.20.1: ok (the image's vLLM: 0.20.1, from " in out
    # the merged flags are in the command the head would run
    assert re.search(rf"vllm serve Qwen/Qwen3-0\.6B .*--revision {REVISION} --max-model-len 4096 "
                     r"--gpu-memory-utilization 0\.8 --enable-prefix-caching --max-num-seqs 8", out), out
    print(f"\nstart --recipe --dry-run with validation: {took:.2f}s wall (2 nodes, incl. CLI start)")


def test_start_recipe_serves_chats_and_stops(tb: Testbed) -> None:
    r = tb.dgx("start", "--recipe", RECIPE, env={**ENV, "COLUMNS": "300"})
    assert r.returncode == 0, r.stderr
    assert re.search(r"model Qwen/Qwen3-0\.6B complete \(01e764fa8f3f, 3 files\); fits: 512\.0 KiB "
                     r"of weights per node in 0\.8 x [0-9.]+ GiB", flat(r.stdout)), r.stdout
    url = re.search(r"^endpoint: (\S+)", r.stdout, re.M)
    assert url, r.stdout
    chat = httpx.post(f"{url.group(1)}/chat/completions", timeout=30, json={
        "model": "Qwen/Qwen3-0.6B", "messages": [{"role": "user", "content": "ping"}],
        "max_tokens": 16})
    assert chat.status_code == 200, chat.text
    assert "ping" in chat.json()["choices"][0]["message"]["content"]
    log = tb.node_exec("node1", "cat", f"{STATE}/{tb.name}/logs/vllm.log").stdout
    # vLLM's parser (the stand-in's, from the 0.20.1 snapshot) read the recipe's flags
    args = re.search(r"non-default args: (\{.*\})", log)
    assert args, log
    for part in ("'enable_prefix_caching': True", "'max_num_seqs': 8", "'max_model_len': 4096",
                 f"'revision': '{REVISION}'", "'gpu_memory_utilization': 0.8"):
        assert part in args.group(1), args.group(1)
    again = tb.dgx("start", "--recipe", RECIPE, env=ENV)
    assert again.returncode == 0 and "already running" in again.stdout, again.stderr
    stop = tb.dgx("stop", env=ENV)
    assert stop.returncode == 0, stop.stderr


def test_a_removed_flag_is_refused_before_any_node_is_touched(tb: Testbed) -> None:
    inv = variant(tb, "swap", "  extra_args: [--swap-space, '4']\n")
    try:
        before = logins(tb)
        for args in (["start"], ["start", "--dry-run"], ["start", "--recipe", RECIPE], ["nodes"]):
            r = run_cli("-i", str(inv), *args, env=ENV)
            assert r.returncode == 2, (args, r.stderr)
            assert r.stderr == (f"error: {inv}: serve.extra_args: --swap-space: vLLM 0.20.1's "
                                "`vllm serve` has no option --swap-space\n"), args
        assert logins(tb) == before  # no SSH login on any node
    finally:
        inv.unlink()


def test_a_model_that_cannot_fit_is_refused_at_preflight_with_the_numbers(tb: Testbed) -> None:
    """0.1 of the node's memory leaves no room once dgxcluster's allowance for activations
    and CUDA graphs is counted: refused before anything starts, --force named."""
    r = tb.dgx("start", env={**ENV, "DGXCLUSTER_SERVE__GPU_MEMORY_UTILIZATION": "0.1"})
    assert r.returncode == 1, r.stderr
    assert "start failed at step 'preflight'" in r.stderr
    assert re.search(r"node1: step 'preflight' failed: model Qwen/Qwen3-0\.6B complete .*; does not "
                     r"fit: weights 1\.0 MiB / 2 rank\(s\) = 512\.0 KiB per node; vLLM's share 0\.1 x ",
                     r.stderr), r.stderr
    assert "--force" in r.stderr and "nothing was changed" in r.stderr
