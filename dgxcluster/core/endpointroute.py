"""How this machine's own checks reach vLLM: at the endpoint clients are given, or through the
head's SSH connection when that endpoint is not reachable from here.

The printed endpoint (`endpoint.base_url`: `serve.public_host`, else the head's host) is for
clients; the operator's machine may not reach it (a firewalled management network, a public
address that does not route back, nodes behind a jump host) while it does reach the head
over SSH. `serve.endpoint_via` says which path start's readiness wait, status and smoke take:

- `direct`: HTTP to the endpoint, as before;
- `ssh`: HTTP over a `direct-tcpip` channel of the head's SSH connection (what `ssh -L`
  uses) to `serve.port` on the head, as the head itself sees it;
- `auto` (default): direct first; when that fails to connect (refused, timed out,
  unresolvable) and the head answers through SSH, SSH for the rest of the invocation.
  A direct refusal with an SSH refusal too is vLLM not listening yet: nothing is decided.

`EndpointRoute.via` says which path the last answer came by, so output can say it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from dgxcluster.core import httpclient
from dgxcluster.core.endpoint import ANY_IPV4, ANY_IPV6, auth_headers, listen_host
from dgxcluster.errors import ConnectError

if TYPE_CHECKING:
    from dgxcluster.core.session import Session
    from dgxcluster.inventory.schema import InventoryModel
    from dgxcluster.remote.connection import Connection
    from dgxcluster.secrets import Secret

DIRECT = "direct"
SSH = "ssh"
AUTO = "auto"
LOOPBACK = "127.0.0.1"


def tunnel_target(inv: InventoryModel) -> tuple[str, int]:
    """Where the head connects for us: loopback when vLLM listens on every address (`::`
    takes IPv4 too on Linux), else the one address it listens on."""
    host = listen_host(inv)
    return (LOOPBACK if host in (ANY_IPV4, ANY_IPV6) else host), inv.serve.port


class EndpointRoute:
    """A `core.endpoint.Getter` that goes direct or through the head's SSH connection."""

    def __init__(self, inv: InventoryModel, key: Secret | None,
                 head: Callable[[], Connection] | None,
                 direct: httpclient.Opener | None = None) -> None:
        self.mode = inv.serve.endpoint_via if head is not None else DIRECT
        self.node = inv.head_node.name
        self._head = head
        self._target = tunnel_target(inv)
        self._headers = auth_headers(key)
        self._direct = direct
        self.via: str | None = SSH if self.mode == SSH else None
        self._decided = self.mode != AUTO

    def describe(self) -> str:
        """` (through SSH to node1)` once answers come that way, else ''."""
        return f" (through SSH to {self.node})" if self.via == SSH else ""

    def opener(self) -> httpclient.Opener | None:
        """What other requests (smoke's POSTs) connect with: the path the GETs found."""
        return self._open if self.via == SSH else self._direct

    def _open(self, timeout: float) -> Any:
        assert self._head is not None
        try:
            return self._head().tunnel(*self._target, timeout=timeout)
        except ConnectError as exc:  # the Getter contract: network trouble is an OSError
            raise OSError(str(exc)) from None

    def _ssh_get(self, url: str, timeout: float) -> tuple[int, str]:
        return httpclient.get(url, timeout, self._headers, opener=self._open)

    def _direct_get(self, url: str, timeout: float) -> tuple[int, str]:
        return httpclient.get(url, timeout, self._headers, opener=self._direct)

    def get(self, url: str, timeout: float) -> tuple[int, str]:
        """GET `url` by the chosen path (the `Getter` shape)."""
        if self.via == SSH:
            return self._ssh_get(url, timeout)
        if self.mode == DIRECT or self._decided:
            answer = self._direct_get(url, timeout)
            self.via = DIRECT
            return answer
        try:
            answer = self._direct_get(url, timeout)
        except OSError as direct_err:
            try:
                answer = self._ssh_get(url, timeout)
            except ConnectionRefusedError:
                if not isinstance(direct_err, ConnectionRefusedError):
                    self.via = SSH  # the head answers; only the endpoint is out of reach
                raise
            except OSError:
                raise direct_err from None
            self.via = SSH
            return answer
        self.via, self._decided = DIRECT, True
        return answer


def session_route(session: Session, key: Secret | None) -> EndpointRoute:
    """The session's one route (made on first use, then kept), so every request of one
    invocation (status's probe and metrics, bench's probe and its forward) takes the path
    the first one found."""
    kept = vars(session)
    route = kept.get("_endpoint_route")
    if not isinstance(route, EndpointRoute):
        inv = session.inventory
        route = EndpointRoute(inv, key, lambda: session.cluster.conn(inv.head_name))
        kept["_endpoint_route"] = route
    return route
