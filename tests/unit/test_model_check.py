"""What `start`'s preflight looks for: which serve.model values are checked, and the message
a node lacking the model gets."""

from __future__ import annotations

import pytest

from dgxcluster.errors import UsageError
from dgxcluster.models.check import missing_lines, served_model
from dgxcluster.models.presence import Presence


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
