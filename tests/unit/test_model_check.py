"""What `start`'s preflight looks for: which serve.model values are checked, and the message
a node lacking the model gets."""

from __future__ import annotations

import pytest

from dgxcluster.errors import UsageError
from dgxcluster.inventory import parse_inventory
from dgxcluster.inventory.load import Inventory
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


def _inv(extra: str = "") -> Inventory:
    return parse_inventory("nodes:\n  - {name: a, host: a, fabric_ip: 10.0.0.1}\n"
                           "  - {name: b, host: b, fabric_ip: 10.0.0.2}\n"
                           f"serve: {{model: org/m{extra}}}\n", environ={})


def test_start_check_is_off_for_skip_and_local_paths() -> None:
    assert not start_check(_inv(), skip=True).active
    assert start_check(_inv(), skip=True).off_reason == "--skip-model-check"
    local = parse_inventory("nodes:\n  - {name: a, host: a, fabric_ip: 10.0.0.1}\n"
                            "serve: {model: /models/q}\n", environ={})
    assert not start_check(local).active and "local path" in start_check(local).off_reason
    with pytest.raises(UsageError, match=r"serve\.revision"):
        start_check(_inv(", revision: 'bad rev'"))


def test_start_check_judges_every_node_scanned() -> None:
    """What `start` is handed (serving.start.ModelCheck): complete on a, absent on b."""
    check = start_check(_inv())
    assert check.active and check.model == "org/m" and check.head == "a"
    verdict = check.judge({"a": entry({BIG: 100, SMALL: 5}), "b": None})
    assert verdict["a"] == (True, f"model org/m complete ({C1[:12]}, 2 files)")
    complete, text = verdict["b"]
    assert not complete and text.startswith("model org/m (main) is not complete here")
    assert "dgxcluster model sync org/m" in text
