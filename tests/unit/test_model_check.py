"""What `start`'s preflight looks for: which serve.model values are checked, and the message
a node lacking the model gets."""

from __future__ import annotations

import pytest

from dgxcluster.errors import UsageError
from dgxcluster.models.check import missing_lines, served_model, start_check
from dgxcluster.models.presence import Presence
from tests.unit.test_model_plan import BIG, C1, SMALL, entry


def test_hub_id_is_checked_at_main_by_default() -> None:
    s = served_model("Qwen/Qwen3-0.6B", None)
    assert s.repo is not None and s.repo.id == "Qwen/Qwen3-0.6B"
    assert s.revision == "main" and not s.skip_reason


def test_revision_is_kept() -> None:
    assert served_model("Qwen/Qwen3-0.6B", "v1.0").revision == "v1.0"


@pytest.mark.parametrize("path", ["/models/qwen", "./qwen", "../w", "~/models/q"])
def test_local_paths_are_not_looked_for(path: str) -> None:
    s = served_model(path, None)
    assert s.repo is None and "local path" in s.skip_reason and path in s.skip_reason


def test_a_value_that_is_neither_fails_naming_the_key() -> None:
    with pytest.raises(UsageError) as err:
        served_model("org/na me;$(x)", None)
    assert err.value.option == "serve.model"
    assert "not a Hugging Face model id" in str(err.value)


def test_missing_lines_name_only_incomplete_nodes_and_the_fix() -> None:
    s = served_model("Qwen/Qwen3-0.6B", None)
    presence = {
        "a": Presence("a", "Qwen/Qwen3-0.6B", "c" * 40, complete=True),
        "b": Presence("b", "Qwen/Qwen3-0.6B", None, reason="not in this node's cache"),
    }
    lines = missing_lines(s, presence)
    assert list(lines) == ["b"]
    assert lines["b"].startswith("model Qwen/Qwen3-0.6B (main) is not complete here: "
                                 "not in this node's cache")
    assert "dgxcluster model sync Qwen/Qwen3-0.6B" in lines["b"]
    assert "--skip-model-check" in lines["b"]


HF = "~/.cache/huggingface"


def test_start_check_is_off_for_local_paths_and_refuses_a_bad_revision() -> None:
    """(--skip-model-check: the CLI hands no check in; see test_serving_start.)"""
    assert not start_check("org/m", None, HF, "a").skip_reason
    local = start_check("/models/q", None, HF, "a")
    assert "local path" in local.skip_reason and local.label == ""
    with pytest.raises(UsageError, match=r"serve\.revision"):
        start_check("org/m", "bad rev", HF, "a")


def test_start_check_judges_every_node_scanned() -> None:
    """What `start` is handed (serving.preflight.NodeCheck): complete on a, absent on b."""
    check = start_check("org/m", None, HF, "a")
    assert check.label == "org/m" and check.head == "a" and check.hf_cache == HF
    verdict = check.judge({"a": entry({BIG: 100, SMALL: 5}), "b": None})
    assert verdict["a"] == (True, f"model org/m complete ({C1[:12]}, 2 files)")
    complete, text = verdict["b"]
    assert not complete and text.startswith("model org/m (main) is not complete here")
    assert "dgxcluster model sync org/m" in text
