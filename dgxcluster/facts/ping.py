"""`ping -M do -s SIZE -I IFACE PEER`: a don't-fragment ping as large as the fabric MTU.

A jumbo-sized ping that arrives proves both ends and the path carry the MTU; one that is
too big for an interface fails with "message too long" (locally) or "Frag needed"
(remotely) instead of being silently fragmented.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from dgxcluster.facts import ParseError, content_lines

COMMAND = "ping"
IP_ICMP_HEADERS = 28  # 20 bytes IPv4 + 8 bytes ICMP


def payload_for(mtu: int) -> int:
    return max(0, mtu - IP_ICMP_HEADERS)


def argv(peer: str, interface: str, mtu: int, count: int = 2) -> list[str]:
    return ["ping", "-n", "-M", "do", "-s", str(payload_for(mtu)), "-c", str(count),
            "-i", "0.2", "-W", "1", "-I", interface, peer]


@dataclass(frozen=True)
class PingResult:
    transmitted: int
    received: int
    rtt_avg_ms: float | None = None
    too_big_mtu: int | None = None  # the MTU that refused the packet, if one did
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.received > 0 and self.too_big_mtu is None and self.error is None


_STATS = re.compile(
    r"(?P<tx>\d+)\s+packets transmitted,\s+(?P<rx>\d+)\s+(?:packets\s+)?received"
)
_RTT = re.compile(r"=\s*[\d.]+/(?P<avg>[\d.]+)/[\d.]+")
_TOO_BIG = re.compile(r"(?:message too long|frag needed)[^\n]*?mtu\s*=?\s*(?P<mtu>\d+)",
                      re.IGNORECASE)
_ERRORS = ("network is unreachable", "cannot assign requested address", "unknown iface",
           "no such device", "bad address", "name or service not known",
           "operation not permitted", "sendmsg:")


def parse(text: str) -> PingResult:
    lowered = text.lower()
    too_big = _TOO_BIG.search(text)
    mtu = int(too_big.group("mtu")) if too_big else None
    if mtu is None and "message too long" in lowered:
        mtu = 0  # refused locally, MTU not named
    stats = _STATS.search(text)
    error = None
    for needle in _ERRORS:
        if needle in lowered:
            error = next(ln.strip() for ln in content_lines(text) if needle in ln.lower())
            break
    if stats is None:
        if error or mtu is not None:
            return PingResult(0, 0, None, mtu, error or "message too long")
        raise ParseError(COMMAND, "no 'N packets transmitted, M received' line", text)
    rtt = _RTT.search(text.split("packets transmitted", 1)[1])
    return PingResult(int(stats.group("tx")), int(stats.group("rx")),
                      float(rtt.group("avg")) if rtt else None, mtu,
                      error if int(stats.group("rx")) == 0 else None)


#: Runs one ping per (interface, peer) pair at once and prints each one's output after a
#: `@@ping N` marker: every peer of a node in one round trip. $1 is the payload size, then
#: interface/peer pairs. The pings' temporary directory is removed before it exits.
BATCH_SCRIPT = (
    'size="$1"; shift; d=$(mktemp -d) || exit 1; trap \'rm -rf "$d"\' EXIT; i=0; '
    'while [ $# -ge 2 ]; do '
    '( ping -n -M do -s "$size" -c 2 -i 0.2 -W 1 -I "$1" "$2" >"$d/$i" 2>&1; '
    'echo "@@rc $?" >>"$d/$i" ) & i=$((i+1)); shift 2; done; wait; '
    'j=0; while [ $j -lt $i ]; do echo "@@ping $j"; cat "$d/$j"; j=$((j+1)); done'
)
MISSING = "ping: command not found"


def batch_args(targets: list[tuple[str, str]], mtu: int) -> list[str]:
    """The arguments of BATCH_SCRIPT for (interface, peer address) pairs."""
    return [str(payload_for(mtu)), *(x for pair in targets for x in pair)]


def split_batch(text: str, count: int) -> dict[int, str]:
    """Each ping's output by its index; a missing block is left out (the caller says so)."""
    out: dict[int, list[str]] = {}
    cur: int | None = None
    for ln in text.splitlines():
        m = re.fullmatch(r"@@ping (\d+)", ln.strip())
        if m:
            cur = int(m.group(1))
            out[cur] = []
        elif cur is not None:
            out[cur].append(ln)
    return {i: "\n".join(v) for i, v in out.items() if i < count}


def not_installed(block: str) -> bool:
    """ping itself is missing (the shell's exit code 127)."""
    return "@@rc 127" in block
