"""`start` and `nodes` refuse bad vLLM flags before any node is touched (exit 2, the file, key
and flag named), `--recipe` names a recipe for this run, `--skip-flag-check` lets flags through.

The nodes here are addresses nothing answers on: a command that got as far as connecting
would exit 3 (unreachable), so exit 2 with the flag's message proves nothing was contacted."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import REPO, run_cli

INVENTORY = """\
cluster: rc
nodes:
  - {{name: spark1, host: 127.0.0.1, port: 1, fabric_ip: 10.99.0.1}}
  - {{name: spark2, host: 127.0.0.2, port: 1, fabric_ip: 10.99.0.2}}
ssh: {{connect_timeout: 1, known_hosts: kh}}
image: {{context: {context}}}
serve:
{serve}
"""


def write(tmp: Path, serve: str, context: Path = REPO / "images" / "testbed") -> Path:
    (tmp / "kh").write_text("")
    path = tmp / "inv.yaml"
    path.write_text(INVENTORY.format(context=context, serve=serve))
    return path


@pytest.mark.parametrize("command", [["start"], ["start", "--dry-run"], ["nodes"]])
def test_a_removed_flag_is_refused_before_any_node_is_touched(tmp_path: Path, command: list[str]) -> None:
    inv = write(tmp_path, "  model: Qwen/Qwen3-0.6B\n  extra_args: [--swap-space, '4']")
    r = run_cli("-i", str(inv), *command, timeout=120)
    assert r.returncode == 2, r.stderr
    assert r.stderr == (f"error: {inv}: serve.extra_args: --swap-space: vLLM 0.20.1's `vllm serve` "
                        "has no option --swap-space\n")


def test_a_flag_dgxcluster_generates_and_a_bad_recipe_name_are_refused(tmp_path: Path) -> None:
    inv = write(tmp_path, "  model: Qwen/Qwen3-0.6B\n  extra_args: [-tp, '4']")
    r = run_cli("-i", str(inv), "start", timeout=120)
    assert r.returncode == 2
    assert ("serve.extra_args: -tp: dgxcluster already passes --tensor-parallel-size (from "
            "serve.tensor_parallel_size); set serve.tensor_parallel_size instead") in r.stderr
    r = run_cli("-i", str(inv), "start", "--recipe", "gpt-oss", timeout=120)
    assert r.returncode == 2
    assert r.stderr.startswith("error: --recipe: no recipe named 'gpt-oss' (did you mean "
                               "gpt-oss-120b-2x?)")


def test_the_escape_hatch_lets_the_flag_through_to_the_nodes(tmp_path: Path) -> None:
    inv = write(tmp_path, "  model: Qwen/Qwen3-0.6B\n  extra_args: [--swap-space, '4']")
    r = run_cli("-i", str(inv), "start", "--skip-flag-check", timeout=120)
    assert r.returncode == 3, r.stderr  # it went on to the nodes (none answers here)
    assert ("warning: serve.extra_args: --swap-space: vLLM 0.20.1's `vllm serve` has no option "
            "--swap-space (passed unchecked: --skip-flag-check)") in r.stderr
    assert "unreachable" in r.stderr and "Traceback" not in r.stderr


def test_nodes_names_the_recipe_and_the_release_it_checked_against(tmp_path: Path) -> None:
    inv = write(tmp_path, "  recipe: testbed-qwen3-0.6b",
                context=REPO / "images" / "vllm-gb10")
    r = run_cli("-i", str(inv), "nodes", timeout=120)
    assert r.returncode == 0, r.stderr
    assert ("serve: Qwen/Qwen3-0.6B (recipe testbed-qwen3-0.6b); vLLM flags checked against "
            "vLLM 0.31.0: ok") in r.stdout
    assert r.stderr == ""


def test_an_image_without_a_known_vllm_is_checked_against_the_newest_with_a_warning(tmp_path: Path) -> None:
    (tmp_path / "ctx").mkdir()
    (tmp_path / "ctx" / "Dockerfile").write_text("FROM scratch\n")
    inv = write(tmp_path, "  model: Qwen/Qwen3-0.6B", context=tmp_path / "ctx")
    r = run_cli("-i", str(inv), "nodes", timeout=120)
    assert r.returncode == 0, r.stderr
    assert "warning: the image's vLLM release is not known (" in r.stderr
    assert "set image.build_args.VLLM_VERSION" in r.stderr
