"""`start`'s flag check: the image's vLLM release read before any node is touched, the snapshot
chosen for it, and the messages users see for a removed flag, a duplicate of a generated one,
an invalid pair and a recipe too new for the image."""

from __future__ import annotations

from pathlib import Path

import pytest

from dgxcluster.core.imagevllm import dockerfile_arg, image_vllm
from dgxcluster.errors import InventoryError, UsageError
from dgxcluster.inventory.load import Inventory, parse_inventory
from dgxcluster.recipes import catalog
from dgxcluster.recipes.merge import apply, plain
from dgxcluster.serving.flagcheck import check, enforce, generated
from dgxcluster.vllmcli import snapshot
from tests.conftest import REPO

NODES = """
nodes:
  - {name: n1, host: n1, fabric_ip: 10.0.0.1}
  - {name: n2, host: n2, fabric_ip: 10.0.0.2}
image:
  context: ctx
"""


def inv(tmp: Path, serve: str = "  model: Qwen/Qwen3-0.6B\n", vllm: str | None = "0.20.1",
        extra: str = "") -> Inventory:
    (tmp / "ctx").mkdir(exist_ok=True)
    arg = f"ARG VLLM_VERSION={vllm}\n" if vllm else ""
    (tmp / "ctx" / "Dockerfile").write_text(f"FROM scratch\n{arg}LABEL x=1\n")
    text = NODES + extra + f"serve:\n{serve}"
    (tmp / "cluster.yaml").write_text(text)
    return parse_inventory(text, str(tmp / "cluster.yaml"), {}, source=tmp / "cluster.yaml")


def errors_of(i: Inventory, recipe: str | None = None, skip: bool = False) -> list[str]:
    merged = apply(i, catalog.get(recipe), environ={}) if recipe else plain(i, {})
    return [str(p) for p in check(merged, skip=skip).errors]


def test_the_images_vllm_is_read_from_its_dockerfile_or_build_args(tmp_path: Path) -> None:
    assert image_vllm(inv(tmp_path)).version == "0.20.1"
    over = inv(tmp_path, extra="  build_args: {VLLM_VERSION: 0.33.0}\n")
    assert image_vllm(over).version == "0.33.0"
    assert image_vllm(over).where == "image.build_args.VLLM_VERSION"
    none = image_vllm(inv(tmp_path, vllm=None))
    assert none.version is None and "has no `ARG VLLM_VERSION=<release>`" in none.where
    # the repo's own images
    assert dockerfile_arg((REPO / "images/vllm-gb10/Dockerfile").read_text(), "VLLM_VERSION") == "0.31.0"
    assert dockerfile_arg((REPO / "images/testbed/Dockerfile").read_text(), "VLLM_VERSION") == "0.20.1"


@pytest.mark.parametrize(("text", "value"), [
    ("ARG VLLM_VERSION=1.2.3\n", "1.2.3"),
    ('ARG A=1 VLLM_VERSION="0.9.0"\n', "0.9.0"),
    ("arg VLLM_VERSION=0.1 \\\n  B=2\n", "0.1"),
    ("ARG VLLM_VERSION\n", None),
    ("ARG VLLM_VERSION=${BASE}\n", None),
    ("ARG VLLM_VERSION=0.1\nFROM x\nARG VLLM_VERSION=0.2\n", "0.2"),
    ("ARG VLLM_VERSION=0.1\nFROM x\nARG VLLM_VERSION\n", "0.1"),  # a stage takes the global
    ("FROM a\nARG VLLM_VERSION=0.1\nFROM b\nARG VLLM_VERSION=0.3\n", "0.3"),
    ("# ARG VLLM_VERSION=0.1\n", None),
])
def test_dockerfile_arg_defaults(text: str, value: str | None) -> None:
    assert dockerfile_arg(text, "VLLM_VERSION") == value


def test_a_release_without_a_snapshot_uses_the_nearest_older_one_and_says_so() -> None:
    exact = snapshot.for_version("0.31.0")
    assert exact.snapshot.version == "0.31.0" and exact.note == ""
    near = snapshot.for_version("0.32.1", "images/x/Dockerfile")
    assert near.snapshot.version == "0.31.0"
    assert near.note.startswith("no snapshot of vLLM 0.32.1 (images/x/Dockerfile): flags checked "
                                "against vLLM 0.31.0, the nearest older release")
    assert "scripts/vllm-cli-snapshot 0.32.1" in near.note
    dev = snapshot.for_version("0.33.0rc1.dev12+gabc")  # pre-releases of 0.33.0 count as 0.33.0
    assert dev.snapshot.version == "0.33.0"
    unknown = snapshot.for_version(None, "x")
    assert unknown.snapshot.version == snapshot.available()[-1] and "not known (x)" in unknown.note
    with pytest.raises(UsageError) as e:
        snapshot.for_version("0.10.0", "image.build_args.VLLM_VERSION")
    assert str(e.value).startswith("image.build_args.VLLM_VERSION: no snapshot of vLLM 0.10.0's "
                                   "command line, nor of an older release (have: 0.20.1")
    assert "--skip-flag-check" in str(e.value)


def test_a_removed_flag_is_refused_with_did_you_mean(tmp_path: Path) -> None:
    i = inv(tmp_path, "  model: Qwen/Qwen3-0.6B\n  extra_args: [--swap-space, '4', --max-num-seqz, '8']\n")
    errs = errors_of(i)
    assert errs[0] == ("serve.extra_args: --swap-space: vLLM 0.20.1's `vllm serve` has no option "
                       "--swap-space")
    assert any("--max-num-seqz: " in e and "did you mean --max-num-seqs" in e for e in errs), errs
    with pytest.raises(InventoryError) as e:
        enforce(check(plain(i, {})), str(tmp_path / "cluster.yaml"))
    assert str(e.value).startswith(f"{tmp_path}/cluster.yaml: serve.extra_args: --swap-space: ")


def test_a_duplicate_of_a_generated_flag_names_the_key_to_set(tmp_path: Path) -> None:
    i = inv(tmp_path, "  model: Qwen/Qwen3-0.6B\n  extra_args: [--gpu-memory-utilization, '0.95']\n")
    assert errors_of(i) == [
        "serve.extra_args: --gpu-memory-utilization: dgxcluster already passes "
        "--gpu-memory-utilization (from serve.gpu_memory_utilization); set "
        "serve.gpu_memory_utilization instead of repeating it here"]


def test_an_invalid_pair_is_refused_as_vllm_would(tmp_path: Path) -> None:
    i = inv(tmp_path, "  model: Qwen/Qwen3-0.6B\n  extra_args: [--enable-auto-tool-choice]\n")
    (err,) = errors_of(i)
    assert err.startswith("serve.extra_args: --enable-auto-tool-choice: needs --tool-call-parser: "
                          "vLLM 0.20.1 refuses to start without it")


def test_recipe_flags_are_checked_against_the_images_release_under_their_own_name(tmp_path: Path) -> None:
    i = inv(tmp_path, "  extra_args: [--max-num-batched-tokens, '2048']\n")
    assert errors_of(i, "gpt-oss-120b-2x") == []
    for version in snapshot.available():
        assert errors_of(inv(tmp_path, vllm=version), "testbed-qwen3-0.6b") == [], version
    bad = inv(tmp_path, "  extra_args: [--tool-call-parser, openai]\n")
    errs = errors_of(bad, "gpt-oss-120b-2x")  # the inventory's wins; nothing is duplicated
    assert errs == []


def test_a_recipe_newer_than_the_image_is_refused(tmp_path: Path) -> None:
    recipe = catalog.get("gpt-oss-120b-2x").model_copy(update={"min_vllm": "0.31.0"})
    report = check(apply(inv(tmp_path), recipe, environ={}))
    assert [str(p) for p in report.errors] == [
        f"recipe gpt-oss-120b-2x: needs vLLM 0.31.0 or newer (min_vllm), but the image has vLLM "
        f"0.20.1 ({tmp_path}/ctx/Dockerfile (ARG VLLM_VERSION)): build an image with a newer base "
        "(images/README.md)"]


def test_skip_reports_the_same_problems_and_refuses_none(tmp_path: Path) -> None:
    i = inv(tmp_path, "  model: Qwen/Qwen3-0.6B\n  extra_args: [--swap-space, '4']\n")
    report = check(plain(i, {}), skip=True)
    assert [p.flag for p in report.errors] == ["--swap-space"]
    enforce(report, "x")  # no exception
    assert report.summary() == ("vLLM flags checked against vLLM 0.20.1: 1 error(s); passed "
                                "unchecked (--skip-flag-check)")
    too_old = inv(tmp_path, vllm="0.1.0")
    with pytest.raises(UsageError):
        check(plain(too_old, {}))
    skipped = check(plain(too_old, {}), skip=True)
    assert skipped.checked_against is None and "no snapshot of vLLM 0.1.0" in skipped.note


def test_generated_leaves_out_only_the_free_form_flags(tmp_path: Path) -> None:
    i = inv(tmp_path, "  model: Qwen/Qwen3-0.6B\n  extra_args: [--enforce-eager]\n")
    g = generated(i)
    assert g[0] == "Qwen/Qwen3-0.6B" and "--enforce-eager" not in g
    assert g[g.index("--gpu-memory-utilization") + 1] == "0.8"


def test_an_inventory_without_a_model_has_its_flags_checked_all_the_same(tmp_path: Path) -> None:
    """`nodes` checks an inventory being written: no serve.model is no reason to skip its
    flags (nor to refuse it: `start` refuses the missing model itself)."""
    i = inv(tmp_path, serve="  model: null\n  extra_args: [--swap-space, '4']\n")
    assert generated(i)[0] == "MODEL"
    assert any("--swap-space" in e for e in errors_of(i))
    with pytest.raises(UsageError, match="no model to serve"):
        from dgxcluster.serving.plan import serve_command

        serve_command(i)


def _spanning(tmp: Path, vllm: str, dp: int) -> Inventory:
    """TP 2 x DP `dp` on one-GPU nodes, native: each replica spans two nodes."""
    (tmp / "ctx").mkdir(exist_ok=True)
    (tmp / "ctx" / "Dockerfile").write_text(f"FROM scratch\nARG VLLM_VERSION={vllm}\n")
    nodes = "".join(f"  - {{name: n{k}, host: n{k}, fabric_ip: 10.0.0.{k}}}\n"
                    for k in range(1, 2 * dp + 1))
    text = (f"nodes:\n{nodes}image:\n  context: ctx\nserve:\n  model: Qwen/Qwen3-0.6B\n"
            f"  executor: native\n  tensor_parallel_size: 2\n  data_parallel_size: {dp}\n")
    (tmp / "cluster.yaml").write_text(text)
    return parse_inventory(text, str(tmp / "cluster.yaml"), {}, source=tmp / "cluster.yaml")


def test_more_spanning_replicas_than_a_replica_has_nodes_needs_vllm_0_28(tmp_path: Path) -> None:
    """vLLM up to 0.27 keeps a leader's --nnodes 2, so 4 replicas of 2 nodes divide by zero
    there: refused before any node is touched, naming the key, the release and where it was
    read. 2 replicas of 2 nodes, or 0.28, pass."""
    (err,) = [e for e in errors_of(_spanning(tmp_path, "0.27.1", 4))
              if e.startswith("serve.data_parallel_size")]
    assert "4 replicas of 2 nodes each need vLLM 0.28 or newer" in err
    assert "vLLM 0.27.1 (" in err and "Dockerfile" in err
    assert not [e for e in errors_of(_spanning(tmp_path, "0.27.1", 2))
                if e.startswith("serve.data_parallel_size")]
    assert not [e for e in errors_of(_spanning(tmp_path, "0.28.0", 4))
                if e.startswith("serve.data_parallel_size")]
