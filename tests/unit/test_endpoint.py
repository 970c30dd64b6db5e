"""The endpoint: one URL builder (IPv6 in brackets), one readiness probe, one HTTP stack.

The probe and `start`'s wait run against tests/openai_stub.py on real loopback sockets,
IPv4 and IPv6: a head whose `host` is an IPv6 literal used to crash `start` with httpx's
InvalidURL (`http://fd00::1:8000`).
"""

from __future__ import annotations

import shlex
import socket
from pathlib import Path

import pytest

from dgxcluster.core import endpoint, httpclient
from dgxcluster.core.endpoint import NOT_SERVING, READY, UNHEALTHY, UNREACHABLE, probe
from dgxcluster.core.nodepaths import NodePaths
from dgxcluster.core.progress import RecordingProgress
from dgxcluster.errors import InventoryError, StepError
from dgxcluster.inventory import parse_inventory
from dgxcluster.inventory.load import Inventory
from dgxcluster.serving import vllm
from tests.fakes import FakeConnection, Reply
from tests.openai_stub import Behaviour, ipv6_loopback, serving

needs_ipv6 = pytest.mark.skipif(not ipv6_loopback(), reason="no IPv6 loopback on this machine")


def inv(host: str, port: int = 8000, serve: str = "") -> Inventory:
    return parse_inventory(
        f"nodes:\n  - {{name: n1, host: '{host}', fabric_ip: 192.0.2.1}}\n"
        f"  - {{name: n2, host: 10.0.0.2, fabric_ip: 192.0.2.2}}\n"
        f"serve: {{model: Qwen/Qwen3-8B, port: {port}{serve}}}\n", environ={})


@pytest.mark.parametrize(("host", "url"), [
    ("10.0.0.1", "http://10.0.0.1:8000"),
    ("spark1.local", "http://spark1.local:8000"),
    ("fd00::1", "http://[fd00::1]:8000"),
    ("::1", "http://[::1]:8000"),
    ("2001:db8::7", "http://[2001:db8::7]:8000"),
])
def test_one_url_builder_brackets_ipv6(host: str, url: str) -> None:
    i = inv(host)
    assert endpoint.base_url(i) == url
    assert endpoint.api_url(i) == f"{url}/v1"
    assert endpoint.host_port(host, 9090) == url.removeprefix("http://")[:-5] + ":9090"
    curl = shlex.split(endpoint.curl_example(i, "m"))
    assert curl[:-4] == ["curl", "-s", *(["-g"] if "[" in url else []),
                         f"{url}/v1/chat/completions"]


def test_listen_host_follows_the_address_the_head_is_reached_at() -> None:
    assert endpoint.listen_host(inv("10.0.0.1")) == "0.0.0.0"
    assert endpoint.listen_host(inv("fd00::1")) == "::"
    assert endpoint.listen_host(inv("fd00::1", serve=", host: '::'")) == "::"
    assert endpoint.listen_host(inv("fd00::1", serve=", host: fd00::1")) == "fd00::1"
    assert endpoint.listen_host(inv("10.0.0.1", serve=", host: 10.0.0.1")) == "10.0.0.1"


def test_an_ipv4_serve_host_for_an_ipv6_head_is_refused_at_load() -> None:
    with pytest.raises(InventoryError) as err:
        inv("fd00::1", serve=", host: 0.0.0.0")
    text = str(err.value)
    assert "serve.host" in text and "IPv4 only" in text and "'::'" in text


def test_getter_sends_its_headers_on_every_request() -> None:
    """bench's endpoint check with an API key: the same HTTP stack, a header added."""
    get = httpclient.getter({"Authorization": "Bearer k-123"})
    with serving() as (port, b):
        p = probe(f"http://127.0.0.1:{port}", get)
        assert httpclient.get(f"http://127.0.0.1:{port}/health", 5)[0] == 200
    assert p.state == READY
    assert b.auth == ["Bearer k-123", "Bearer k-123", None]


def test_probe_ready_on_ipv4() -> None:
    with serving() as (port, b):
        p = probe(f"http://127.0.0.1:{port}", model="Qwen/Qwen3-8B")
    assert (p.state, p.health, p.models) == (READY, 200, ["Qwen/Qwen3-8B"])
    assert b.paths == ["/health", "/v1/models"]


@needs_ipv6
def test_probe_ready_on_ipv6() -> None:
    with serving("::1") as (port, _):
        p = probe(endpoint.base_url(inv("::1", port)))
    assert p.state == READY and p.url == f"http://[::1]:{port}"


def test_probe_states() -> None:
    with serving(behaviour=Behaviour(health=503)) as (port, _):
        assert probe(f"http://127.0.0.1:{port}").state == UNHEALTHY
    with serving(behaviour=Behaviour(models=[])) as (port, _):
        p = probe(f"http://127.0.0.1:{port}")
        assert (p.state, p.error) == (UNHEALTHY, "/v1/models lists no model yet")
    with serving(behaviour=Behaviour(models=["other"])) as (port, _):
        p = probe(f"http://127.0.0.1:{port}", model="Qwen/Qwen3-8B")
        assert (p.state, p.error) == (UNHEALTHY, "/v1/models lists other, not Qwen/Qwen3-8B")
        assert probe(f"http://127.0.0.1:{port}").state == READY  # any model, when none is named
    with socket.socket() as s:  # bound, never listening: refused
        s.bind(("127.0.0.1", 0))
        assert probe(f"http://127.0.0.1:{s.getsockname()[1]}", timeout=2).state == NOT_SERVING

    def timeout(_url: str, _t: float) -> tuple[int, str]:
        raise TimeoutError("timed out")

    assert probe("http://192.0.2.1:8000", timeout).state == UNREACHABLE


def test_http_client_reads_no_proxy_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # the discard port: would fail
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")
    with serving() as (port, _):
        assert httpclient.get(f"http://127.0.0.1:{port}/health", 5)[0] == 200


def test_http_client_failures_are_oserrors() -> None:
    for url in ("http://127.0.0.1:99999/health", "ftp://x/", "http:///nohost"):
        with pytest.raises(OSError, match="bad URL"):
            httpclient.get(url, 1)


PATHS = NodePaths("/root", "~/.local/state/dgxcluster", "dgx")
RUNNING = Reply(stdout="state=running 0\nexit=\npid=42\nlast=Loading weights\n")


@needs_ipv6
def test_start_waits_for_vllm_on_an_ipv6_head() -> None:
    """The crash of issue 11: `start`'s wait on a head with `host: <IPv6>` reaches ready."""
    with serving("::1") as (port, _):
        conn = FakeConnection("n1").on("state=", RUNNING)
        took = vllm.wait_ready(conn, inv("::1", port), PATHS, 30, RecordingProgress(),
                               sleep=lambda _s: None)
    assert took >= 0
    assert endpoint.base_url(inv("::1", port)) == f"http://[::1]:{port}"


def test_wait_gives_up_with_the_reason_and_the_log_tail() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        i = inv("127.0.0.1", s.getsockname()[1])
        conn = FakeConnection("n1").on("state=", RUNNING).on(r"^tail ", Reply(stdout="last line"))
        with pytest.raises(StepError) as err:
            vllm.wait_ready(conn, i, PATHS, -1, RecordingProgress(), sleep=lambda _s: None)
    assert err.value.step == "vllm-ready" and "not ready within -1s" in str(err.value)
    assert "Connection refused" in str(err.value) and "last line" in str(err.value)


def test_the_endpoint_uses_the_ssh_alias_hostname_or_serve_public_host(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 12: `host: node1` (an ~/.ssh/config alias) became `http://node1:8000`, which
    this machine's HTTP client cannot resolve. The alias's HostName is used; a configured
    `serve.public_host` wins (the address clients should use); an IP is used as it is."""
    from dgxcluster.remote import jumps

    (tmp_path / ".ssh").mkdir()
    (tmp_path / ".ssh" / "config").write_text(
        "Host node1\n  HostName 10.9.8.7\n  User nvidia\nHost node6\n  HostName fd00::6\n")
    monkeypatch.setenv("HOME", str(tmp_path))
    jumps.resolved_host.cache_clear()
    try:
        assert endpoint.base_url(inv("node1")) == "http://10.9.8.7:8000"
        assert endpoint.base_url(inv("node6")) == "http://[fd00::6]:8000"
        assert endpoint.listen_host(inv("node6")) == "::"  # vLLM listens where it is probed
        assert endpoint.base_url(inv("spark9")) == "http://spark9:8000"  # no alias: as it is
        assert endpoint.base_url(inv("10.0.0.1")) == "http://10.0.0.1:8000"
        pub = inv("node1", serve=", public_host: llm.example.org")
        assert endpoint.api_url(pub) == "http://llm.example.org:8000/v1"
    finally:
        jumps.resolved_host.cache_clear()


def test_public_host_is_left_out_of_the_config_hash_and_checked() -> None:
    from dgxcluster.serving import plan

    assert plan.config_hash(inv("10.0.0.1"), "img") == plan.config_hash(
        inv("10.0.0.1", serve=", public_host: llm.example.org"), "img")  # no restart for it
    with pytest.raises(InventoryError, match="public_host"):
        inv("10.0.0.1", serve=", public_host: 'http://x/'")
