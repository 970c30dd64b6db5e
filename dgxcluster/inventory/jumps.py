"""Jump hosts as the inventory writes them: OpenSSH's ProxyJump syntax, parsed and checked.

`nodes[].jump` and `ssh.jump` take what `ssh -J` takes: hops separated by commas, each
`[user@]host[:port]` (IPv6 in brackets, an `ssh://` prefix allowed), outermost first.
A hop may also name a node of the inventory: that node is then reached as the inventory
reaches it. `none` means a direct connection. Pure: no I/O, no name resolution.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

NONE = "none"
USER_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,31}$")
_BAD_HOST_RE = re.compile(r"[\s'\"`$;|&<>\\,@/\[\]]")
#: More hops than anyone routes through; also bounds expansion of nested jumps.
MAX_HOPS = 8


@dataclass(frozen=True)
class JumpHop:
    """One hop as written: `host` may be a hostname, an IP, an ssh config alias or a node name."""

    host: str
    user: str | None = None
    port: int | None = None

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        user = f"{self.user}@" if self.user else ""
        port = f":{self.port}" if self.port is not None else ""
        return f"{user}{host}{port}"


def check_host(host: str) -> str:
    """A host that reaches ssh as one word: no whitespace, quotes, shell characters or leading '-'."""
    if not host:
        raise ValueError("empty host")
    if any(ord(c) < 32 or ord(c) == 127 for c in host):
        raise ValueError("host must not contain control characters (newline, tab, ...)")
    if host.startswith("-") or _BAD_HOST_RE.search(host) or len(host) > 253:
        raise ValueError(f"{host!r} is not a hostname, an IP address or an ssh config alias")
    return host


def parse_hop(text: str) -> JumpHop:
    """`[ssh://][user@]host[:port]`; IPv6 addresses in brackets (`[fe80::1]:22`)."""
    rest = text.strip()
    if rest.startswith("ssh://"):
        rest = rest[len("ssh://"):].rstrip("/")
    if not rest:
        raise ValueError("empty hop (two commas in a row, or a trailing comma?)")
    user = None
    if "@" in rest:
        user, rest = rest.rsplit("@", 1)
        if not USER_RE.match(user):
            raise ValueError(f"{user!r} is not a valid user name")
    host, port = _host_port(rest, text)
    if ":" not in host:
        check_host(host)
    elif not re.fullmatch(r"[0-9A-Fa-f:.%a-zA-Z0-9]+", host):
        raise ValueError(f"{host!r} is not an IPv6 address")
    return JumpHop(host=host, user=user, port=port)


def _host_port(rest: str, text: str) -> tuple[str, int | None]:
    """`host[:port]` or `[v6]:port` (the part after any `user@`)."""
    if rest.startswith("["):
        host, sep, tail = rest[1:].partition("]")
        if not sep:
            raise ValueError(f"{text!r}: '[' without ']'")
        if tail and not tail.startswith(":"):
            raise ValueError(f"{text!r}: expected ':PORT' after ']'")
        return host, (_port(tail[1:], text) if tail else None)
    if rest.count(":") == 1:
        host, _, p = rest.partition(":")
        return host, _port(p, text)
    if ":" in rest:
        raise ValueError(f"{text!r}: write an IPv6 address in brackets, e.g. [{rest}]:22")
    return rest, None


def _port(text: str, whole: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise ValueError(f"{whole!r}: port must be a number from 1 to 65535")
    return int(text)


def parse_jump(text: str) -> tuple[JumpHop, ...]:
    """The hops of a ProxyJump value, outermost first; () for `none`."""
    if text.strip().lower() == NONE:
        return ()
    hops = tuple(parse_hop(part) for part in text.split(","))
    if len(hops) > MAX_HOPS:
        raise ValueError(f"{len(hops)} hops: at most {MAX_HOPS}")
    return hops
