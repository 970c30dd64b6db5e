"""Which jump hosts stand between this machine and a node, resolved to addresses.

The inventory's `jump` (nodes[].jump, ssh.jump) wins; without it, ~/.ssh/config's ProxyJump
for the node's host decides, as `ssh` would (`none` means direct). Every hop is looked up in
~/.ssh/config (HostName, Port, User, IdentityFile), and the first hop's own ProxyJump is
followed, as `ssh -J` does. Pure: the ssh config lookup is passed in.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from dgxcluster.errors import ConnectError
from dgxcluster.inventory.jumps import MAX_HOPS, JumpHop, parse_jump

if TYPE_CHECKING:
    from dgxcluster.inventory.schema import InventoryModel, NodeSpec

#: host -> its ~/.ssh/config settings (paramiko's SSHConfig.lookup: lower-case keys).
SshLookup = Callable[[str], Mapping[str, Any]]


@dataclass(frozen=True)
class Hop:
    """One jump host, ready to connect to: `label` is what messages call it."""

    label: str
    host: str
    port: int
    user: str
    key_files: tuple[str, ...] = ()

    @property
    def where(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.user}@{host}:{self.port}"

    @property
    def described(self) -> str:
        """`jump host NAME (user@addr:port)`, the address only once when NAME already says it."""
        where = self.where
        return f"jump host {where}" if self.label in where else f"jump host {self.label} ({where})"

    @property
    def key(self) -> tuple[str, int, str]:
        return (self.host, self.port, self.user)


@dataclass(frozen=True)
class Route:
    """The jump hosts to a node, outermost first; or a ProxyCommand from ~/.ssh/config."""

    hops: tuple[Hop, ...] = ()
    proxy_command: str | None = None


DIRECT = Route()


def resolve(inv: InventoryModel, spec: NodeSpec, lookup: SshLookup, local_user: str) -> Route:
    """The route to node `spec`; ConnectError naming the node for a loop or a bad ProxyJump."""
    r = _Resolver(inv, lookup, local_user, spec.name)
    own = inv.jump_hops(spec.name)
    if own is not None:
        return Route(hops=r.chain(own, from_inventory=True, seen=(_target_key(spec),)))
    cfg = lookup(spec.host)
    text = cfg.get("proxyjump")
    if text:
        hops = r.parse(text, spec.host)
        return Route(hops=r.chain(hops, from_inventory=False, seen=(_target_key(spec),)))
    command = cfg.get("proxycommand")
    if command and str(command).strip().lower() != "none":
        return Route(proxy_command=str(command))
    return DIRECT


def _target_key(spec: NodeSpec) -> str:
    return spec.host


class _Resolver:
    def __init__(self, inv: InventoryModel, lookup: SshLookup, local_user: str, node: str) -> None:
        self.inv = inv
        self.lookup = lookup
        self.local_user = local_user
        self.node = node

    def fail(self, reason: str) -> ConnectError:
        return ConnectError(self.node, reason, hint="fix ProxyJump in ~/.ssh/config, or set "
                            "nodes[].jump / ssh.jump in the inventory")

    def parse(self, text: str, host: str) -> tuple[JumpHop, ...]:
        try:
            return parse_jump(text)
        except ValueError as exc:
            raise self.fail(f"~/.ssh/config: ProxyJump {text!r} (for {host}): {exc}") from None

    def chain(self, hops: tuple[JumpHop, ...], *, from_inventory: bool,
              seen: tuple[str, ...]) -> tuple[Hop, ...]:
        if not hops:
            return ()
        if len(seen) > MAX_HOPS:
            raise self.fail("more than 8 jump hosts (a ProxyJump loop?): " + " -> ".join(seen))
        first = hops[0]
        node = self._node(first) if from_inventory else None
        if first.host in seen:
            raise self.fail("jump hosts form a loop: " + " -> ".join([*seen, first.host]))
        # the first hop's own route comes before it (ssh -J does the same)
        if node is not None:
            own = self.inv.jump_hops(node.name)
            before = (self.chain(own, from_inventory=True, seen=(*seen, first.host))
                      if own is not None else self._from_config(node.host, (*seen, first.host)))
        else:
            before = self._from_config(first.host, (*seen, first.host))
        return before + tuple(self.hop(h, from_inventory) for h in hops)

    def _from_config(self, host: str, seen: tuple[str, ...]) -> tuple[Hop, ...]:
        text = self.lookup(host).get("proxyjump")
        if not text:
            return ()
        return self.chain(self.parse(text, host), from_inventory=False, seen=seen)

    def _node(self, hop: JumpHop) -> NodeSpec | None:
        return self.inv.node(hop.host) if hop.host in self.inv.names else None

    def hop(self, hop: JumpHop, from_inventory: bool) -> Hop:
        node = self._node(hop) if from_inventory else None
        alias = node.host if node is not None else hop.host
        cfg = self.lookup(alias)
        host = str(cfg.get("hostname") or alias)
        port = hop.port or (node.port if node is not None and node.port != 22 else None)
        port = port or int(cfg.get("port", 22))
        if node is not None:
            user = hop.user or node.user or self.inv.ssh.user or cfg.get("user")
        else:
            user = hop.user or cfg.get("user") or self.inv.ssh.user
        keys = tuple(os.path.expanduser(k) for k in cfg.get("identityfile", ()))
        label = node.name if node is not None else str(hop)
        return Hop(label=label, host=host, port=int(port), user=str(user or self.local_user),
                   key_files=keys)
