"""serve.endpoint_via: this machine's checks reach vLLM directly or through the head's SSH
connection (issue 12, item 3).

vLLM is tests/openai_stub.py on a real loopback socket; the head is a FakeConnection whose
`tunnel` connects to it (the real SSH channel, on a testbed whose endpoint does not route:
tests/e2e/test_endpoint_via_ssh.py). "Not reachable directly" is a direct opener that times
out, as a TCP connect to an unroutable address does.
"""

from __future__ import annotations

import socket

import pytest

from dgxcluster.core.endpoint import NOT_SERVING, READY, UNREACHABLE, base_url, probe
from dgxcluster.core.endpointroute import DIRECT, SSH, EndpointRoute, tunnel_target
from dgxcluster.errors import ConnectError
from dgxcluster.inventory import parse_inventory
from dgxcluster.inventory.load import Inventory
from dgxcluster.secrets import Secret
from dgxcluster.smoke import run_smoke
from tests.fakes import FakeConnection
from tests.openai_stub import Behaviour, serving


def inv(via: str = "auto", extra: str = "") -> Inventory:
    return parse_inventory(
        "cluster: demo\n"
        "nodes:\n  - {name: n1, host: 10.0.0.1, fabric_ip: 192.0.2.1}\n"
        f"serve: {{model: Qwen/Qwen3-8B, port: 8000, public_host: 192.0.2.9, "
        f"endpoint_via: {via}{extra}}}\n", environ={})


def unroutable(_timeout: float) -> socket.socket:
    raise TimeoutError("timed out")


def refused_here(_timeout: float) -> socket.socket:
    raise ConnectionRefusedError("[Errno 111] Connection refused")


def test_auto_goes_through_ssh_when_the_endpoint_does_not_answer_from_here() -> None:
    with serving(behaviour=Behaviour(key="k-1")) as (port, b):
        head = FakeConnection("n1")
        head.forwards[("127.0.0.1", 8000)] = ("127.0.0.1", port)
        route = EndpointRoute(inv(extra=", api_key: VLLM_KEY"), Secret("k-1"), lambda: head,
                              direct=unroutable)
        found = probe(base_url(inv()), route.get, model="Qwen/Qwen3-8B")
        assert (found.state, found.models) == (READY, ["Qwen/Qwen3-8B"])
        assert route.via == SSH and route.describe() == " (through SSH to n1)"
        assert head.tunnels == [("127.0.0.1", 8000), ("127.0.0.1", 8000)]  # /health, /v1/models
        assert b.auth[-1] == "Bearer k-1" and b.paths == ["/health", "/v1/models"]
        found.via = route.via
        assert found.reason().endswith("(through the head's SSH connection)")
        assert found.to_json()["via"] == "ssh"


def test_auto_stays_direct_when_the_endpoint_answers() -> None:
    with serving() as (port, _b):
        head = FakeConnection("n1")
        route = EndpointRoute(inv(), None, lambda: head,
                              direct=lambda t: socket.create_connection(("127.0.0.1", port), t))
        assert probe(base_url(inv()), route.get).state == READY
    assert route.via == DIRECT and route.describe() == ""
    assert head.tunnels == []  # no SSH at all


def test_refused_both_ways_is_vllm_not_listening_yet_and_decides_nothing() -> None:
    head = FakeConnection("n1")  # no forward: the head's connect is refused
    route = EndpointRoute(inv(), None, lambda: head, direct=refused_here)
    assert probe(base_url(inv()), route.get).state == NOT_SERVING
    assert route.via is None


def test_unroutable_with_the_head_refusing_settles_on_ssh_and_says_not_serving() -> None:
    head = FakeConnection("n1")
    route = EndpointRoute(inv(), None, lambda: head, direct=unroutable)
    found = probe(base_url(inv()), route.get)
    assert found.state == NOT_SERVING and route.via == SSH  # vLLM not up; the path is known
    probe(base_url(inv()), route.get)
    assert len(head.tunnels) == 2  # the second probe did not try the dead direct path again


def test_unreachable_both_ways_reports_the_direct_error() -> None:
    head = FakeConnection("n1", unreachable="timed out")
    route = EndpointRoute(inv(), None, lambda: head, direct=unroutable)
    found = probe(base_url(inv()), route.get)
    assert (found.state, found.error, route.via) == (UNREACHABLE, "timed out", None)


def test_direct_never_uses_ssh_and_ssh_never_tries_direct() -> None:
    head = FakeConnection("n1")
    route = EndpointRoute(inv("direct"), None, lambda: head, direct=unroutable)
    assert probe(base_url(inv()), route.get).state == UNREACHABLE and head.tunnels == []
    with serving() as (port, _b):
        head.forwards[("127.0.0.1", 8000)] = ("127.0.0.1", port)

        def never(_timeout: float) -> socket.socket:
            raise AssertionError("went direct")

        route = EndpointRoute(inv("ssh"), None, lambda: head, direct=never)
        assert probe(base_url(inv()), route.get).state == READY and route.via == SSH


def test_the_tunnel_goes_to_the_address_vllm_listens_on() -> None:
    assert tunnel_target(inv()) == ("127.0.0.1", 8000)
    assert tunnel_target(inv(extra=", host: 10.0.0.1")) == ("10.0.0.1", 8000)


def test_a_lost_ssh_connection_is_an_oserror_for_the_probe() -> None:
    def gone() -> FakeConnection:
        raise ConnectError("n1", "connection lost")

    route = EndpointRoute(inv("ssh"), None, gone)
    found = probe(base_url(inv()), route.get)
    assert found.state == UNREACHABLE and "connection lost" in (found.error or "")


def test_smoke_posts_its_completions_by_the_path_the_probe_found() -> None:
    with serving() as (port, b):
        head = FakeConnection("n1")
        head.forwards[("127.0.0.1", 8000)] = ("127.0.0.1", port)
        route = EndpointRoute(inv(), None, lambda: head, direct=unroutable)
        report = run_smoke(inv(), max_tokens=8, concurrency=2, route=route)
    assert report.ok, report.failure
    assert report.endpoint.via == SSH
    assert b.paths.count("/v1/chat/completions") == 2
    assert len(head.tunnels) == 4  # /health, /v1/models and the two POSTs


@pytest.mark.parametrize("value", ["tunnel", "", "SSH"])
def test_a_bad_endpoint_via_is_refused_at_load(value: str) -> None:
    from dgxcluster.errors import InventoryError

    with pytest.raises(InventoryError, match="endpoint_via"):
        inv(repr(value))


def test_endpoint_via_is_left_out_of_the_config_hash() -> None:
    """It is how this machine looks, not how the cluster runs: no restart for it."""
    from dgxcluster.serving import plan

    assert plan.config_hash(inv("auto"), "img") == plan.config_hash(inv("ssh"), "img")


def test_a_local_forward_carries_a_programs_requests_through_the_head() -> None:
    """bench gives llama-benchy a URL: once the route went through SSH, a local port on
    127.0.0.1 carries each connection over a tunnel of the head's connection (core.forward);
    the program's own Authorization header passes untouched, concurrent connections each get
    their own tunnel, and closing the forward ends the port."""
    import concurrent.futures
    import json
    import urllib.request

    from dgxcluster.core.forward import LOOPBACK, LocalForward

    with serving(behaviour=Behaviour(key="k-2")) as (port, b):
        head = FakeConnection("n1")
        head.forwards[("127.0.0.1", 8000)] = ("127.0.0.1", port)
        route = EndpointRoute(inv(), Secret("k-2"), lambda: head, direct=unroutable)
        probe(base_url(inv()), route.get)
        opener = route.opener()
        assert route.via == SSH and opener is not None
        with LocalForward(opener) as fwd:
            assert fwd.url_host == f"{LOOPBACK}:{fwd.port}"

            def models(_: int) -> list[str]:
                req = urllib.request.Request(f"http://{fwd.url_host}/v1/models",
                                             headers={"Authorization": "Bearer k-2"})
                with urllib.request.urlopen(req, timeout=10) as resp:
                    return [m["id"] for m in json.load(resp)["data"]]

            with concurrent.futures.ThreadPoolExecutor(4) as pool:
                answers = list(pool.map(models, range(4)))
            assert answers == [["Qwen/Qwen3-8B"]] * 4
            port_used = fwd.port
        assert b.auth[-4:] == ["Bearer k-2"] * 4
        assert head.tunnels.count(("127.0.0.1", 8000)) == 2 + 4  # the probe's two, one each
        with pytest.raises(OSError):
            socket.create_connection((LOOPBACK, port_used), timeout=2).close()


def test_a_local_forward_whose_tunnel_is_refused_closes_the_connection_and_says_why() -> None:
    from dgxcluster.core.forward import LocalForward

    def refused(_timeout: float) -> socket.socket:
        raise ConnectionRefusedError("n1 cannot connect to 127.0.0.1:8000")

    with LocalForward(refused) as fwd:
        s = socket.create_connection(("127.0.0.1", fwd.port), timeout=5)
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        try:
            got = s.recv(100)
        except ConnectionResetError:  # closed with the request unread: a reset
            got = b""
        assert got == b""  # closed: nothing answers behind the forward
        s.close()
    assert fwd.failures == ["n1 cannot connect to 127.0.0.1:8000"]
