"""`serve.api_key`: a secret's name in the inventory, the value only in the head's 0600
env-file as VLLM_API_KEY, and sent by every client dgxcluster runs (probe, smoke, status)."""

from __future__ import annotations

import shlex

import pytest

from dgxcluster.core import endpoint
from dgxcluster.core.endpoint import READY, UNHEALTHY, probe
from dgxcluster.core.nodepaths import NodePaths
from dgxcluster.core.session import inventory_secrets
from dgxcluster.errors import InventoryError, UsageError
from dgxcluster.inventory import parse_inventory
from dgxcluster.inventory.load import Inventory
from dgxcluster.remote.command import to_command_line
from dgxcluster.secrets import Secret, render_env_file
from dgxcluster.serving import plan
from dgxcluster.smoke import run_smoke
from tests.openai_stub import Behaviour, serving

KEY = Secret("k-0123456789abcdef", "MY_VLLM_KEY")
TOKEN = Secret("hf_abcdefghijklmnopqrstu", "HF_TOKEN")
PATHS = NodePaths(home="/home/nvidia", state_dir="~/.local/state/dgxcluster", cluster="dgx")


def inv(serve: str = ", api_key: MY_VLLM_KEY", host: str = "10.0.0.1", port: int = 8000
        ) -> Inventory:
    return parse_inventory(
        f"nodes:\n  - {{name: n1, host: '{host}', fabric_ip: 192.0.2.1}}\n"
        f"  - {{name: n2, host: 10.0.0.2, fabric_ip: 192.0.2.2}}\n"
        f"serve: {{model: Qwen/Qwen3-8B, port: {port}{serve}}}\n", environ={})


def test_the_inventory_names_the_key_and_refuses_a_value() -> None:
    assert inv().serve.api_key == "MY_VLLM_KEY"
    assert inv("").serve.api_key is None
    with pytest.raises(InventoryError) as err:
        inv(", api_key: 'sk-live-123'")
    assert "serve.api_key" in str(err.value)


def test_the_key_reaches_the_head_only_through_its_env_file_as_vllm_api_key() -> None:
    i = inv()
    secrets = {"HF_TOKEN": TOKEN, "MY_VLLM_KEY": KEY}
    head = plan.node_commands(i, "n1", PATHS, "img:ctx-1", "c", secrets)
    worker = plan.node_commands(i, "n2", PATHS, "img:ctx-1", "c", secrets)
    assert render_env_file(head.env_values).decode().splitlines() == [
        f"HF_TOKEN={TOKEN.reveal()}", f"VLLM_API_KEY={KEY.reveal()}"]
    assert render_env_file(worker.env_values).decode().splitlines() == [f"HF_TOKEN={TOKEN.reveal()}"]
    for argv in (head.docker_run, worker.docker_run, plan.serve_exec(i), plan.serve_command(i)):
        line = to_command_line(argv)
        assert KEY.reveal() not in line and "api-key" not in line and "VLLM_API_KEY" not in line


def test_a_named_key_that_is_not_set_is_bad_input_naming_the_key() -> None:
    with pytest.raises(UsageError) as err:
        endpoint.api_key(inv(), {"HF_TOKEN": TOKEN})
    assert err.value.option == "serve.api_key" and "MY_VLLM_KEY" in str(err.value)
    assert endpoint.api_key(inv(""), {}) is None
    assert endpoint.api_key(inv(), {"MY_VLLM_KEY": KEY}) is KEY


def test_the_secret_is_loaded_from_the_environment_by_its_name() -> None:
    i = inv()
    found = inventory_secrets(i, {"MY_VLLM_KEY": KEY.reveal(), "OTHER": "x"})
    assert found["MY_VLLM_KEY"] == KEY and "OTHER" not in found


def test_curl_example_names_the_variable_never_the_value() -> None:
    text = endpoint.curl_example(inv(), "m")
    assert text.endswith(' -H "Authorization: Bearer $MY_VLLM_KEY"')
    assert shlex.split(text)[:3] == ["curl", "-s", "http://10.0.0.1:8000/v1/chat/completions"]
    assert "Authorization" not in endpoint.curl_example(inv(""), "m")


def test_probe_with_the_key_is_ready_and_without_it_says_a_key_is_wanted() -> None:
    with serving(behaviour=Behaviour(key=KEY.reveal())) as (port, b):
        url = f"http://127.0.0.1:{port}"
        ok = probe(url, endpoint.getter(KEY))
        bare = probe(url, endpoint.getter(None))
    assert ok.state == READY
    assert bare.state == UNHEALTHY and "401" in (bare.error or "") and "API key" in (bare.error or "")
    assert b.auth == [f"Bearer {KEY.reveal()}"] * 2 + [None, None]  # /health open, /v1 not


def test_smoke_sends_the_key_on_every_request() -> None:
    with serving(behaviour=Behaviour(key=KEY.reveal())) as (port, b):
        report = run_smoke(inv(port=port, host="127.0.0.1"), concurrency=2, max_tokens=3,
                           api_key=KEY)
        refused = run_smoke(inv(port=port, host="127.0.0.1"), max_tokens=3)
    assert report.ok, report.failure
    assert b.auth[:4] == [f"Bearer {KEY.reveal()}"] * 4  # /health, /v1/models, 2 chats
    assert not refused.ok and "401" in (refused.endpoint.error or "")
