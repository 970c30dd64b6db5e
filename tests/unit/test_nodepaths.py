"""Every node path dgxcluster uses, in one place (core.nodepaths)."""

from __future__ import annotations

import pytest

from dgxcluster.core import ship
from dgxcluster.core.nodepaths import NodePaths, build_subdir, home_relative

P = NodePaths("/home/nvidia", "~/.local/state/dgxcluster", "spark")
ROOT = "/home/nvidia/.local/state/dgxcluster/spark"


def test_the_layout_under_the_cluster_root() -> None:
    assert P.root == ROOT
    assert P.env_dir == f"{ROOT}/env" and P.env_file("head") == f"{ROOT}/env/head.env"
    assert P.env_file("model-pull-ab12") == f"{ROOT}/env/model-pull-ab12.env"
    assert P.log_dir == f"{ROOT}/logs" and P.vllm_log == f"{ROOT}/logs/vllm.log"
    assert P.records_dir == f"{ROOT}/records"
    assert P.image_record("dgxcluster/vllm-gb10") == f"{ROOT}/records/image-dgxcluster_vllm-gb10.json"
    assert P.model_records_dir == f"{ROOT}/records/models"
    assert P.bin_file("relay-agent-0123.py") == f"{ROOT}/bin/relay-agent-0123.py"
    assert P.tmp_dir == f"{ROOT}/tmp" and P.tmp_file("x.json") == f"{ROOT}/tmp/x.json"
    assert P.build_dir("dgxcluster/vllm-gb10") == f"{ROOT}/build/dgxcluster_vllm-gb10"
    assert P.build_dir("a/b") == f"{P.root}/{build_subdir('a/b')}"
    assert P.verify_dir == f"{ROOT}/verify"


@pytest.mark.parametrize(("state_dir", "unresolved", "relative"), [
    ("~/.local/state/dgxcluster", "~/.local/state/dgxcluster/spark", ".local/state/dgxcluster/spark"),
    ("~", "~/spark", "spark"),
    ("/var/lib/dgx", "/var/lib/dgx/spark", "/var/lib/dgx/spark"),
])
def test_paths_the_node_expands_itself(state_dir: str, unresolved: str, relative: str) -> None:
    """Three spellings of one place: absolute (asked $HOME), `~/...` (scripts that expand
    it), relative to $HOME (scripts that `cd "$HOME"`)."""
    assert NodePaths.unresolved(state_dir, "spark").root == unresolved
    assert NodePaths.unresolved(state_dir, "spark").log_dir == f"{unresolved}/logs"
    assert home_relative(state_dir, "spark", "env") == f"{relative}/env"
    resolved = ship.path(NodePaths("/home/u", state_dir, "spark"))
    rel = ship.home_path(state_dir, "spark")  # the node-side bundle, where a session starts
    assert resolved == (rel if rel.startswith("/") else f"/home/u/{rel}")
