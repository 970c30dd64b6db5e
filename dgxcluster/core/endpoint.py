"""The OpenAI-compatible endpoint vLLM serves on the head node, seen from the operator.

One URL builder (`base_url`, IPv6-safe: `http://[fd00::1]:8000`), one readiness probe
(`probe`) and one HTTP stack (`core.httpclient`) for `start`'s wait, `status` and `smoke`.
vLLM answers `GET /health` with 200 once the engine is up (503 if it died), then lists the
served model under `GET /v1/models`. The probe takes a `Getter`, so tests can hand in
anything; by default it is `httpclient.get`.
"""

from __future__ import annotations

import ipaddress
import json
import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from dgxcluster.core import httpclient
from dgxcluster.errors import UsageError

if TYPE_CHECKING:
    from dgxcluster.inventory.schema import InventoryModel
    from dgxcluster.secrets import Secret

READY = "ready"
UNHEALTHY = "unhealthy"
NOT_SERVING = "not serving"
UNREACHABLE = "unreachable"

#: GET url with a timeout -> (HTTP status, body). Raises ConnectionRefusedError when nothing
#: listens, another OSError (timeouts included) when the host cannot be reached.
Getter = Callable[[str, float], tuple[int, str]]

#: What vLLM's `--host` means "every address" by: 0.0.0.0 is IPv4 only (vLLM opens an
#: AF_INET6 socket only for an IPv6 address), `::` takes IPv6 and, on Linux, IPv4 too.
ANY_IPV4 = "0.0.0.0"  # noqa: S104 - the API must be reachable from the operator's machine
ANY_IPV6 = "::"
#: The variable vLLM reads its API key from when `--api-key` is not given (vLLM's
#: `build_app`: `args.api_key or [envs.VLLM_API_KEY]`); the key never goes on its argv.
VLLM_KEY_ENV = "VLLM_API_KEY"


def is_ipv6(host: str) -> bool:
    try:
        return isinstance(ipaddress.ip_address(host.split("%", 1)[0]), ipaddress.IPv6Address)
    except ValueError:
        return False


def url_host(host: str) -> str:
    """`host` as it goes into a URL: IPv6 literals in brackets (RFC 3986)."""
    return f"[{host}]" if is_ipv6(host) else host


def host_port(host: str, port: int) -> str:
    """`host:port` as URLs and Prometheus targets write it (`[fd00::1]:8000` for IPv6)."""
    return f"{url_host(host)}:{port}"


def public_host(inv: InventoryModel) -> str:
    """Where clients reach vLLM: `serve.public_host`, else the head's `host` as ssh reaches
    it (an ~/.ssh/config alias is resolved to its HostName: this machine's HTTP client does
    not read ssh aliases, so `http://node1:8000` would not resolve)."""
    if inv.serve.public_host:
        return inv.serve.public_host
    host = inv.head_node.host
    try:
        ipaddress.ip_address(host)
    except ValueError:
        from dgxcluster.remote.jumps import resolved_host  # reads ~/.ssh/config (Fabric)

        return resolved_host(host)
    return host


def base_url(inv: InventoryModel) -> str:
    """`http://<public host>:<serve.port>`, the server root (`/health`, `/v1/...` below it)."""
    return f"http://{host_port(public_host(inv), inv.serve.port)}"


def api_url(inv: InventoryModel) -> str:
    """The OpenAI-compatible base URL clients are given."""
    return f"{base_url(inv)}/v1"


def listen_host(inv: InventoryModel) -> str:
    """What `vllm serve --host` gets: `serve.host`, except that the default (0.0.0.0, IPv4
    only) becomes `::` when the operator reaches the head over IPv6, so the endpoint answers
    on the address it is probed and advertised at."""
    host = inv.serve.host
    if host == ANY_IPV4 and "host" not in inv.serve.model_fields_set \
            and is_ipv6(public_host(inv)):
        return ANY_IPV6
    return host


def curl_example(inv: InventoryModel, model: str) -> str:
    """A chat completion to try the endpoint with (`-g`: curl's URL globbing would read the
    brackets of an IPv6 address as a range). With an API key, the header names the
    operator's variable (`"Authorization: Bearer $VLLM_API_KEY"`), never the value."""
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": "Hello!"}],
                       "max_tokens": 64})
    glob_off = ["-g"] if is_ipv6(inv.head_node.host) else []
    text = shlex.join(["curl", "-s", *glob_off, f"{api_url(inv)}/chat/completions",
                       "-H", "Content-Type: application/json", "-d", body])
    name = inv.serve.api_key
    return text + (f' -H "Authorization: Bearer ${name}"' if name else "")


def api_key(inv: InventoryModel, secrets: Mapping[str, Secret]) -> Secret | None:
    """The key clients send (None: auth off). A key the inventory names but neither the
    environment nor the secrets file holds is bad input, raised before anything runs."""
    name = inv.serve.api_key
    if name is None:
        return None
    key = secrets.get(name)
    if key is None:
        raise UsageError(f"names {name}, which is not set: export {name}=... or put it in "
                         "secrets.file (mode 0600)", "serve.api_key")
    return key


def auth_headers(key: Secret | None) -> dict[str, str]:
    """`Authorization: Bearer KEY` as vLLM's AuthenticationMiddleware wants it, or nothing."""
    return {"Authorization": f"Bearer {key.reveal()}"} if key is not None else {}


def getter(key: Secret | None) -> Getter:
    """The GET every dgxcluster client of the endpoint uses: with the key when there is one."""
    return httpclient.getter(auth_headers(key)) if key is not None else httpclient.get


@dataclass
class EndpointProbe:
    url: str
    state: str
    health: int | None = None
    models: list[str] = field(default_factory=list)
    error: str | None = None
    #: How this machine reached it: "direct", "ssh" (core.endpointroute), None: not known.
    via: str | None = None

    @property
    def ready(self) -> bool:
        return self.state == READY

    def path_note(self) -> str:
        """` (through the head's SSH connection)` when this machine reached it that way."""
        return " (through the head's SSH connection)" if self.via == "ssh" else ""

    def reason(self) -> str:
        """One line saying why the endpoint is (not) ready."""
        if self.state == READY:
            return f"ready at {self.url}/v1{self.path_note()}"
        if self.state == UNHEALTHY:
            return f"vLLM at {self.url} is unhealthy: {self.error}"
        if self.state == NOT_SERVING:
            return f"nothing is serving at {self.url} ({self.error}); is the cluster started?"
        return f"cannot reach {self.url}: {self.error}"

    def to_json(self) -> dict[str, object]:
        return {"endpoint": f"{self.url}/v1", "state": self.state, "health": self.health,
                "models": self.models, "error": self.error, "via": self.via}


def probe(url: str, get: Getter = httpclient.get, timeout: float = 5.0,
          model: str | None = None) -> EndpointProbe:
    """Ask /health, then /v1/models (which must list `model`, when given). Never raises for
    network trouble: it is reported."""
    try:
        status, body = get(f"{url}/health", timeout)
    except ConnectionRefusedError as exc:
        return EndpointProbe(url, NOT_SERVING, error=_short(exc) or "connection refused")
    except OSError as exc:
        return EndpointProbe(url, UNREACHABLE, error=_short(exc) or type(exc).__name__)
    if status != 200:
        detail = f"/health returned {status}"
        text = body.strip()[:200]
        return EndpointProbe(url, UNHEALTHY, status, error=f"{detail}: {text}" if text else detail)
    try:
        status, body = get(f"{url}/v1/models", timeout)
        if status == 401:
            raise ValueError("HTTP 401 Unauthorized: the endpoint wants an API key (name it "
                             "in serve.api_key and export it)")
        if status != 200:
            raise ValueError(f"HTTP {status}")
        data = json.loads(body).get("data", [])
        models = [str(m["id"]) for m in data if isinstance(m, dict) and "id" in m]
    except (OSError, ValueError, AttributeError) as exc:
        return EndpointProbe(url, UNHEALTHY, 200, error=f"/v1/models failed: {_short(exc)}")
    if not models:
        return EndpointProbe(url, UNHEALTHY, 200, error="/v1/models lists no model yet")
    if model is not None and model not in models:
        return EndpointProbe(url, UNHEALTHY, 200, models,
                             error=f"/v1/models lists {', '.join(models)}, not {model}")
    return EndpointProbe(url, READY, 200, models)


def _short(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[-1][:200] if text else ""
