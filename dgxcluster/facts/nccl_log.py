"""NCCL's own log (`NCCL_DEBUG=INFO`): which transport it really chose, and why.

The channel lines (`Channel 00/0 : 0[0] -> 1[1] [send] via NET/Socket/0`) are the proof:
`NET/IB` is RDMA, `NET/Socket` the TCP fallback, `P2P/...` and `SHM` stay inside one node.
`Using network Socket` alone proves nothing on one node: NCCL loads a network plugin even
where every peer is reached by P2P (seen on 2 NVLink-joined H200s), so channel lines win.
Without channel lines (NCCL_DEBUG_SUBSYS=INIT,NET) the chosen network plugin decides.
GB10 has no GPUDirect RDMA: "GPU Direct RDMA Disabled" is expected there.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from dgxcluster.facts import ParseError

COMMAND = "NCCL debug log"

_LINE = re.compile(r"NCCL (?P<level>INFO|WARN|TRACE) (?P<msg>.*)$")
_VIA = re.compile(r"\bvia\s+(?P<t>[A-Za-z0-9_]+(?:/[A-Za-z0-9_]+)*)")
_NETWORK = re.compile(r"^Using network (?P<net>\S+)")
_IB_USING = re.compile(r"^NET/IB\s*:\s*Using\s+(?P<list>.*?)(?:;\s*OOB\s+(?P<oob>\S+))?$")
_SOCK_USING = re.compile(r"^NET/Socket\s*:\s*Using\s+(?P<list>.*)$")
_DEV = re.compile(r"\[\d+\](?P<name>[^:\s\[\]]+)(?::(?P<port>\d+))?(?:/(?P<kind>\w+))?")
_ENV = re.compile(r"^(?P<key>NCCL_[A-Z0-9_]+) set (?:by environment )?to (?P<val>.*?)\.?$")
_VERSION = re.compile(r"^NCCL version (?P<v>\S+)")
_NNODES = re.compile(r"\bnNodes (?P<n>\d+)")


@dataclass(frozen=True)
class Transport:
    kind: str  # NET/IB, NET/Socket, P2P, SHM, unknown
    detail: str
    evidence: str  # "channels" (via lines) or "plugin" (Using network) or "none"

    @property
    def sockets(self) -> bool:
        return self.kind == "NET/Socket"

    @property
    def rdma(self) -> bool:
        return self.kind == "NET/IB"


@dataclass
class NcclLog:
    lines: int = 0
    version: str | None = None
    networks: list[str] = field(default_factory=list)  # "Using network X"
    ib_devices: list[str] = field(default_factory=list)  # NET/IB : Using [0]dev:port/RoCE
    socket_ifaces: list[str] = field(default_factory=list)
    via: dict[str, int] = field(default_factory=dict)  # transport path -> channel lines
    gdr_disabled: bool = False
    ib_no_device: bool = False
    ib_init_failed: bool = False
    env: dict[str, str] = field(default_factory=dict)
    nnodes: int | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def gdr_used(self) -> bool:
        return any("GDRDMA" in t for t in self.via)

    def _kinds(self) -> set[str]:
        kinds: set[str] = set()
        for t in self.via:
            parts = t.split("/")
            if parts[0] == "NET" and len(parts) > 1:
                kinds.add(f"NET/{parts[1]}")
            else:
                kinds.add(parts[0])
        return kinds

    @property
    def transport(self) -> Transport:
        kinds = self._kinds()
        paths = ", ".join(sorted(self.via))
        if kinds:
            if "NET/Socket" in kinds:
                return Transport("NET/Socket", f"TCP sockets (channels via {paths})", "channels")
            if "NET/IB" in kinds:
                return Transport("NET/IB", f"RDMA (channels via {paths})", "channels")
            nets = sorted(k for k in kinds if k.startswith("NET/"))
            if nets:
                return Transport(nets[0], f"network plugin {nets[0]} (channels via {paths})",
                                 "channels")
            if "P2P" in kinds:
                return Transport("P2P", f"GPU peer-to-peer inside one node, NVLink or PCIe "
                                        f"(channels via {paths})", "channels")
            if "SHM" in kinds:
                return Transport("SHM", f"shared memory inside one node (channels via {paths})",
                                 "channels")
            return Transport("unknown", f"channels via {paths}", "channels")
        if self.networks:
            net = self.networks[-1]
            kind = {"IB": "NET/IB", "Socket": "NET/Socket"}.get(net, f"NET/{net}")
            return Transport(kind, f"network plugin {net} (no channel lines in the log)", "plugin")
        return Transport("unknown", "the log names no transport", "none")


def _dev_names(listing: str) -> list[str]:
    return [m.group("name") for m in _DEV.finditer(listing)]


def _read(log: NcclLog, level: str, msg: str) -> None:
    """What one `NCCL INFO`/`WARN` message says, added to `log`."""
    if level == "WARN":
        log.warnings.append(msg)
    for v in _VIA.finditer(msg):
        t = v.group("t")
        log.via[t] = log.via.get(t, 0) + 1
    if (n := _NETWORK.match(msg)) and n.group("net") not in log.networks:
        log.networks.append(n.group("net"))
    elif ib := _IB_USING.match(msg):
        log.ib_devices += [d for d in _dev_names(ib.group("list")) if d not in log.ib_devices]
    elif s := _SOCK_USING.match(msg):
        log.socket_ifaces += [d for d in _dev_names(s.group("list")) if d not in log.socket_ifaces]
    elif e := _ENV.match(msg):
        log.env[e.group("key")] = e.group("val")
    elif v2 := _VERSION.match(msg):
        log.version = v2.group("v")
    log.gdr_disabled |= "GPU Direct RDMA Disabled" in msg
    log.ib_no_device |= msg.startswith("NET/IB : No device found")
    log.ib_init_failed |= msg.startswith("Failed to initialize NET plugin IB")
    if (nn := _NNODES.search(msg)) and log.nnodes is None:
        log.nnodes = int(nn.group("n"))


def parse(text: str) -> NcclLog:
    log = NcclLog()
    for raw in text.splitlines():
        m = _LINE.search(raw)
        if not m:
            continue
        log.lines += 1
        _read(log, m.group("level"), m.group("msg").strip())
    if log.lines == 0:
        raise ParseError(COMMAND, "no 'NCCL INFO' line (was NCCL_DEBUG=INFO set?)", text)
    return log
