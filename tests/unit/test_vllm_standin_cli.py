"""The testbed's vLLM stand-in parses its command line with vLLM's argument table (the same
snapshot dgxcluster checks inventory flags against): it accepts what `start` passes and fails an
unknown or malformed flag exactly as `vllm serve` does (exit 2, vLLM's usage and message)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from dgxcluster.serving import plan
from tests.unit.test_serving_plan import inv

REPO = Path(__file__).resolve().parents[2]
TESTBED = REPO / "images" / "testbed"


@pytest.fixture(scope="module")
def standin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of images/testbed/standin with its vllm_cli staged, as the image gets it."""
    root = tmp_path_factory.mktemp("standin") / "standin"
    shutil.copytree(TESTBED / "standin", root, ignore=shutil.ignore_patterns("vllm_cli", "__pycache__"))
    subprocess.run([str(TESTBED / "stage-vllm-cli"), str(root)], check=True, capture_output=True)
    return root


@pytest.fixture()
def standin_cli(standin: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    monkeypatch.setenv("DGXCLUSTER_STANDIN_VLLM_CLI", str(standin / "vllm_cli"))
    sys.path.insert(0, str(standin))
    try:
        from vllm_standin import cli

        yield cli
    finally:
        sys.path.remove(str(standin))
        for mod in [m for m in sys.modules if m.startswith("vllm_standin")]:
            del sys.modules[mod]


def vllm(standin: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(standin / "vllm"), *argv], capture_output=True,
                          text=True, timeout=60)


def test_stage_copies_the_snapshot_of_the_images_vllm(standin: Path) -> None:
    table = json.loads((standin / "vllm_cli" / "table.json").read_text())
    version = next(line.split("=", 1)[1] for line in (TESTBED / "Dockerfile").read_text().splitlines()
                   if line.startswith("ARG VLLM_VERSION="))
    assert table["vllm_version"] == version
    assert (standin / "vllm_cli" / "vllm_argparse.py").read_bytes() == (
        REPO / "dgxcluster" / "nodeside" / "vllm_argparse.py").read_bytes()


def test_an_unknown_flag_exits_as_vllm_serve_does(standin: Path) -> None:
    table = json.loads((standin / "vllm_cli" / "table.json").read_text())
    p = vllm(standin, "serve", "m", "--no-such-flag-xyz", "1")
    assert (p.returncode, p.stderr) == (table["unrecognized_example"]["exit"],
                                        table["unrecognized_example"]["stderr"])
    p = vllm(standin, "serve", "m", "--swap-space", "4")  # removed from vLLM before 0.20.1
    assert p.returncode == 2
    assert p.stderr.endswith("vllm: error: unrecognized arguments: --swap-space 4\n")
    assert p.stdout == ""  # nothing started


def test_a_bad_value_and_a_refused_combination_exit_as_vllm_does(standin: Path) -> None:
    p = vllm(standin, "serve", "m", "--kv-cache-dtype", "fp9")
    assert p.returncode == 2
    assert "vllm serve: error: argument --kv-cache-dtype: invalid choice: 'fp9'" in p.stderr
    assert p.stderr.startswith("usage: vllm serve [model_tag] [options]\n")
    p = vllm(standin, "serve", "m", "--enable-auto-tool-choice")
    assert p.returncode == 1
    assert p.stderr.rstrip().endswith(
        "TypeError: Error: --enable-auto-tool-choice requires --tool-call-parser")


def test_the_standin_accepts_every_argument_start_passes(standin_cli: object) -> None:
    i = inv("nodes:\n  - {name: a, host: a, fabric_ip: 10.0.0.1}\n"
            "serve: {model: m, served_model_name: s, revision: r, pipeline_parallel_size: 2,"
            " extra_args: [--enforce-eager, --max_num_seqs=4]}\n"
            "ray: {num_gpus: 4}\n")  # TP 2 x PP 2 on one node needs 4 GPUs (refused at load)
    args = standin_cli.parse(plan.serve_command(i)[1:])  # type: ignore[attr-defined]
    assert (args.model, args.tensor_parallel_size, args.pipeline_parallel_size) == ("m", 2, 2)
    assert args.distributed_executor_backend == "ray" and args.served_model_name == ["s"]
    assert args.enforce_eager is True and args.max_num_seqs == 4 and args.port == 8000
    assert args.non_default["max_num_seqs"] == 4 and "port" not in args.non_default


def test_extra_args_never_become_served_model_names(standin: Path) -> None:
    """vLLM's --served-model-name takes one or more values (nargs="+"): placed last, a bare
    value in serve.extra_args became a second served name. It comes right after the model,
    ended by the next option, so vLLM refuses the bare value instead."""
    sys.path.insert(0, str(standin / "vllm_cli"))
    try:
        import vllm_argparse
    finally:
        sys.path.pop(0)
    table = json.loads((standin / "vllm_cli" / "table.json").read_text())
    i = inv("nodes:\n  - {name: a, host: a, fabric_ip: 10.0.0.1}\n"
            "serve: {model: m, served_model_name: 'my name', extra_args: [bare, -x, 'a b']}\n")
    top, _ = vllm_argparse.build(table)
    args, unknown = top.parse_known_args(vllm_argparse.preprocess(plan.serve_command(i)[1:]))
    assert args.served_model_name == ["my name"] and args.model_tag == "m"
    assert unknown == ["bare", "-x", "a b"]
