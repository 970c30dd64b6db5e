"""The OpenAI-compatible endpoint vLLM serves on the head node, seen from the operator.

`status` and `smoke` reach it directly over HTTP (no SSH): `http://<head host>:<serve.port>`.
vLLM answers `GET /health` with 200 once the engine is up (503 if it died), then lists
the served model under `GET /v1/models`. The probe takes a `Getter`, so `status` can use
the standard library (no HTTP client to import or TLS context to build on its hot path)
and tests can hand in anything.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:
    import httpx

    from dgxcluster.inventory.load import Inventory

READY = "ready"
UNHEALTHY = "unhealthy"
NOT_SERVING = "not serving"
UNREACHABLE = "unreachable"

#: GET url with a timeout -> (HTTP status, body). Raises ConnectionRefusedError when nothing
#: listens, another OSError (timeouts included) when the host cannot be reached.
Getter = Callable[[str, float], tuple[int, str]]


def base_url(inv: Inventory) -> str:
    host = inv.head_node.host
    if ":" in host:  # an IPv6 literal
        host = f"[{host}]"
    return f"http://{host}:{inv.serve.port}"


def stdlib_get(url: str, timeout: float) -> tuple[int, str]:
    """A plain HTTP GET (no proxies from the environment: the endpoint is on our network)."""
    import http.client

    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port or 80, timeout=timeout)
    try:
        conn.request("GET", parts.path + (f"?{parts.query}" if parts.query else ""))
        resp = conn.getresponse()
        return resp.status, resp.read(1 << 20).decode("utf-8", "replace")
    except http.client.HTTPException as exc:
        raise OSError(f"bad HTTP answer: {exc!r}") from None
    finally:
        conn.close()


def httpx_get(client: httpx.Client) -> Getter:
    """A Getter over an httpx client (for callers that already have one)."""
    import httpx

    def get(url: str, timeout: float) -> tuple[int, str]:
        try:
            resp = client.get(url, timeout=timeout)
        except httpx.ConnectError as exc:
            raise ConnectionRefusedError(str(exc)) from None
        except httpx.HTTPError as exc:
            raise OSError(str(exc) or type(exc).__name__) from None
        return resp.status_code, resp.text

    return get


@dataclass
class EndpointProbe:
    url: str
    state: str
    health: int | None = None
    models: list[str] = field(default_factory=list)
    error: str | None = None

    @property
    def ready(self) -> bool:
        return self.state == READY

    def reason(self) -> str:
        """One line saying why the endpoint is (not) ready."""
        if self.state == READY:
            return f"ready at {self.url}/v1"
        if self.state == UNHEALTHY:
            return f"vLLM at {self.url} is unhealthy: {self.error}"
        if self.state == NOT_SERVING:
            return f"nothing is serving at {self.url} ({self.error}); is the cluster started?"
        return f"cannot reach {self.url}: {self.error}"

    def to_json(self) -> dict[str, object]:
        return {"endpoint": f"{self.url}/v1", "state": self.state, "health": self.health,
                "models": self.models, "error": self.error}


def probe(url: str, get: Getter = stdlib_get, timeout: float = 5.0) -> EndpointProbe:
    """Ask /health, then /v1/models. Never raises for network trouble: it is reported."""
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
        if status != 200:
            raise ValueError(f"HTTP {status}")
        data = json.loads(body).get("data", [])
        models = [str(m["id"]) for m in data if isinstance(m, dict) and "id" in m]
    except (OSError, ValueError, AttributeError) as exc:
        return EndpointProbe(url, UNHEALTHY, 200, error=f"/v1/models failed: {_short(exc)}")
    if not models:
        return EndpointProbe(url, UNHEALTHY, 200, error="/v1/models lists no model yet")
    return EndpointProbe(url, READY, 200, models)


def _short(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[-1][:200] if text else ""
