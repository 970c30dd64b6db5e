"""The model agent on a node: put there on first use at a content-addressed path, then called."""

from __future__ import annotations

import pytest

from dgxcluster.core import ship
from dgxcluster.core.nodepaths import NodePaths
from dgxcluster.errors import StepError
from dgxcluster.models.agent import NodeModels, hub_dir
from tests.fakes import FakeConnection, Reply

PATHS = NodePaths("/home/u", "~/.local/state/dgxcluster", "c")

def test_paths_on_the_node_are_absolute_and_content_addressed() -> None:
    assert hub_dir(PATHS, "~/.cache/huggingface") == "/home/u/.cache/huggingface/hub"
    assert hub_dir(PATHS, "/data/hf") == "/data/hf/hub"
    assert NodeModels.at(FakeConnection("n1"), PATHS, "/data/hf").agent == ship.path(PATHS)
    assert ship.path(PATHS).startswith("/home/u/.local/state/dgxcluster/c/bin/nodeside-")


def test_the_agent_is_put_on_first_use_and_the_call_repeated() -> None:
    conn = FakeConnection("n1")
    calls = {"n": 0}

    def reply(argv: list[str], _stdin: bytes | None) -> Reply:
        calls["n"] += 1
        if calls["n"] == 1:
            return Reply(exit_code=2, stderr=f"python3: can't open file '{argv[1]}'")
        return Reply(stdout="ok")

    conn.on("python3", reply)
    conn.on(r"^sh -c", Reply(exit_code=1))  # ship's check: the bundle is not there yet
    nm = NodeModels.at(conn, PATHS, "~/.cache/huggingface")
    res = nm.run("scan", "--repo", "models--o--m")
    assert res.stdout == "ok" and calls["n"] == 2
    assert conn.files[nm.agent] == ship.bundle()
    assert conn.calls[0] == ["python3", nm.agent, "hfcache", "scan",
                             "--hub", "/home/u/.cache/huggingface/hub",
                             "--records", PATHS.sub("records", "models"), "--repo", "models--o--m"]


def test_no_python_on_the_node_is_said_plainly() -> None:
    conn = FakeConnection("n1").on("python3", Reply(exit_code=127, stderr="sh: python3: not found"))
    with pytest.raises(StepError, match="python3 is needed on every node") as info:
        NodeModels.at(conn, PATHS, "~/.cache/huggingface").run("scan")
    assert info.value.node == "n1"


def test_unreadable_agent_output_is_a_step_error_naming_the_node() -> None:
    conn = FakeConnection("n1").on("python3", Reply(stdout="not json at all"))
    with pytest.raises(StepError) as info:
        NodeModels.at(conn, PATHS, "~/.cache/huggingface").scan(["models--o--m"])
    assert info.value.step == "model-scan" and info.value.node == "n1"
