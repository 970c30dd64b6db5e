"""The OpenAI-compatible endpoint vLLM serves on the head node, seen from the operator.

`status` and `smoke` reach it directly over HTTP (no SSH): `http://<head host>:<serve.port>`.
vLLM answers `GET /health` with 200 once the engine is up (503 if it died), then lists
the served model under `GET /v1/models`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import httpx

    from dgxcluster.inventory.load import Inventory

READY = "ready"
UNHEALTHY = "unhealthy"
NOT_SERVING = "not serving"
UNREACHABLE = "unreachable"


def base_url(inv: Inventory) -> str:
    host = inv.head_node.host
    if ":" in host:  # an IPv6 literal
        host = f"[{host}]"
    return f"http://{host}:{inv.serve.port}"


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
        """One line saying why the endpoint is not ready."""
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


def probe(client: httpx.Client, url: str, timeout: float = 5.0) -> EndpointProbe:
    """Ask /health, then /v1/models. Never raises for network trouble: it is reported."""
    import httpx

    try:
        health = client.get(f"{url}/health", timeout=timeout)
    except httpx.ConnectError as exc:
        return EndpointProbe(url, NOT_SERVING, error=_short(exc) or "connection refused")
    except httpx.HTTPError as exc:
        return EndpointProbe(url, UNREACHABLE, error=_short(exc) or type(exc).__name__)
    if health.status_code != 200:
        detail = f"/health returned {health.status_code}"
        body = health.text.strip()[:200]
        return EndpointProbe(url, UNHEALTHY, health.status_code,
                             error=f"{detail}: {body}" if body else detail)
    try:
        resp = client.get(f"{url}/v1/models", timeout=timeout)
        resp.raise_for_status()
        data = resp.json().get("data", [])
        models = [str(m["id"]) for m in data if isinstance(m, dict) and "id" in m]
    except (httpx.HTTPError, ValueError, AttributeError) as exc:
        return EndpointProbe(url, UNHEALTHY, 200, error=f"/v1/models failed: {_short(exc)}")
    if not models:
        return EndpointProbe(url, UNHEALTHY, 200, error="/v1/models lists no model yet")
    return EndpointProbe(url, READY, 200, models)


def _short(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[-1][:200] if text else ""
