"""What `fabric plan` reads on a node, in one round trip: who we are there (root, or
passwordless sudo), the address we reached it on (`SSH_CONNECTION`: the management
interface), the default route, the netplan binary, the current `40-cx7.yaml` (base64, so
the comparison is byte-exact) and every interface's addresses. Pure parser; the script is
fixed, values arrive as `$1`.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field
from ipaddress import IPv4Address, ip_address

from dgxcluster.core.netplan import PATH
from dgxcluster.facts import ParseError, ipaddr
from dgxcluster.remote.command import shell

COMMAND = "fabric probe"
SCRIPT = (
    'f="$1"; PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"; export PATH; '
    'echo "@@uid $(id -u)"; '
    'if [ "$(id -u)" != 0 ]; then '
    'if out=$(sudo -n true 2>&1); then echo "@@sudo ok"; '
    'else echo "@@sudo no $(echo "$out" | head -n 1)"; fi; fi; '
    'echo "@@ssh ${SSH_CONNECTION:-}"; '
    'echo "@@netplan $(command -v netplan || echo missing)"; '
    'if [ -e "$f" ]; then echo "@@mode $(stat -c %a "$f" 2>/dev/null || sudo -n stat -c %a "$f")"; '
    'c=$(base64 -w0 "$f" 2>/dev/null || sudo -n base64 -w0 "$f" 2>/dev/null) '
    '&& echo "@@content $c" || echo "@@unreadable"; '
    'else echo "@@missing"; fi; '
    'echo "@@route $(ip -j route show default 2>/dev/null | tr -d \'\\n\')"; '
    'echo "@@addr"; ip -j addr show'
)


def argv(path: str = PATH) -> list[str]:
    return shell(SCRIPT, path)


@dataclass
class NodeState:
    uid: int | None = None
    sudo: bool | None = None  # None: root, no sudo needed
    sudo_error: str = ""
    ssh_address: IPv4Address | None = None  # the node's address our SSH session arrived at
    netplan: str | None = None  # path of the netplan binary, None when missing
    exists: bool = False
    mode: int | None = None
    content: str | None = None  # None: missing or unreadable
    unreadable: bool = False
    default_route: list[str] = field(default_factory=list)  # interfaces of default routes
    ifaces: dict[str, ipaddr.Interface] = field(default_factory=dict)

    @property
    def privileged(self) -> bool:
        return self.uid == 0 or bool(self.sudo)

    @property
    def sudo_argv(self) -> list[str]:
        return [] if self.uid == 0 else ["sudo", "-n"]

    def management(self) -> list[str]:
        """Interfaces carrying the SSH address or a default route: never to be written."""
        out = list(self.default_route)
        if self.ssh_address is not None:
            out += [n for n, i in self.ifaces.items() if i.has(self.ssh_address)]
        return list(dict.fromkeys(out))


def _ssh(value: str) -> IPv4Address | None:
    parts = value.split()
    if len(parts) >= 3:
        try:
            addr = ip_address(parts[2].split("%")[0])
        except ValueError:
            return None
        return addr if isinstance(addr, IPv4Address) else None
    return None


def _routes(value: str) -> list[str]:
    try:
        data = json.loads(value) if value.strip() else []
    except ValueError:
        return []
    return [str(r["dev"]) for r in data if isinstance(r, dict) and r.get("dev")]


def _line(st: NodeState, key: str, value: str) -> None:
    if key == "uid":
        st.uid = int(value) if value.isdigit() else None
    elif key == "sudo":
        st.sudo = value.startswith("ok")
        st.sudo_error = value.removeprefix("no").strip()
    elif key == "ssh":
        st.ssh_address = _ssh(value)
    elif key == "netplan":
        st.netplan = None if value in ("", "missing") else value
    elif key == "mode":
        st.exists = True
        st.mode = int(value, 8) if value and all(c in "01234567" for c in value) else None
    elif key == "content":
        st.exists = True
        try:
            st.content = base64.b64decode(value, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            st.unreadable = True
    elif key == "unreadable":
        st.exists, st.unreadable = True, True
    elif key == "route":
        st.default_route = _routes(value)


def parse(text: str) -> NodeState:
    head, sep, addrs = text.partition("@@addr\n")
    if not sep or "@@uid" not in head:
        raise ParseError(COMMAND, "missing @@uid/@@addr markers", text)
    st = NodeState()
    for ln in head.splitlines():
        if ln.startswith("@@"):
            key, _, value = ln[2:].partition(" ")
            _line(st, key, value.strip())
    st.ifaces = ipaddr.parse(addrs)
    return st
