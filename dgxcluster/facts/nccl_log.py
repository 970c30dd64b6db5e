"""NCCL's own log (`NCCL_DEBUG=INFO`): which transport it really chose, and why.

The channel lines (`Channel 00/0 : 0[0] -> 1[1] [send] via NET/Socket/0`) are the proof
(NCCL src/transport/net.cc prints `via NET/<network name>/<device>[/GDRDMA]`): `NET/IB` is
RDMA, `NET/Socket` the TCP fallback, `P2P/...` and `SHM` stay inside one node. The external
IB plugin that NGC containers load (nccl-rdma-sharp-plugins, `IBext_v6` .. `IBext_v11`) is
RDMA too: `Using network IBext_v11`, `via NET/IBext_v11/0`; its name is kept in the detail.
`Using network Socket` alone proves nothing on one node: NCCL loads a network plugin even
where every peer is reached by P2P (seen on 2 NVLink-joined H200s), so channel lines win.
Without channel lines (NCCL_DEBUG_SUBSYS=INIT,NET) the chosen network decides.
GB10 has no GPUDirect RDMA: `GPU Direct RDMA Disabled ...` and the ring summary
`Connected all rings, use ring PXN 0 GDR 0` (src/transport/generic.cc) are expected there.
Lines copied out of a log by hand often lose the `host:pid:tid [dev] NCCL INFO` prefix; the
few message shapes this parser needs are read without it too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from dgxcluster.facts import ParseError

COMMAND = "NCCL debug log"

_LINE = re.compile(r"NCCL (?P<level>INFO|WARN|TRACE) (?P<msg>.*)$")
#: NCCL messages recognised without the `NCCL INFO` prefix (hand-copied log excerpts).
_BARE = re.compile(r"^(?:Channel \d+(?:/\d+)? : .* via \S+.*|NET/(?:IB|Socket)\s*:\s*Using\s.*"
                   r"|Using network \S+|NCCL version \S+.*|Connected all rings, .*)$")
_VIA = re.compile(r"\bvia\s+(?P<t>[A-Za-z0-9_]+(?:/[A-Za-z0-9_]+)*)")
_NETWORK = re.compile(r"^Using network (?P<net>\S+)")
_IB_USING = re.compile(r"^NET/IB\s*:\s*Using\s+(?P<list>.*?)(?:;\s*OOB\s+(?P<oob>\S+))?$")
_SOCK_USING = re.compile(r"^NET/Socket\s*:\s*Using\s+(?P<list>.*)$")
_DEV = re.compile(r"\[\d+\](?P<name>[^:\s\[\]]+)(?::(?P<port>\d+))?(?:/(?P<kind>\w+))?")
_ENV = re.compile(r"^(?P<key>NCCL_[A-Z0-9_]+) set (?:by environment )?to (?P<val>.*?)\.?$")
_VERSION = re.compile(r"^NCCL version (?P<v>\S+)")
_NNODES = re.compile(r"\bnNodes (?P<n>\d+)")
_RING = re.compile(r"^Connected all rings, use ring PXN (?P<pxn>\d+) GDR (?P<gdr>\d+)")
#: RDMA networks: NCCL's internal IB/RoCE transport and the external IB plugin's versions.
_RDMA_NET = re.compile(r"^IB(?:ext(?:_v\d+)?)?$")


def net_kind(name: str) -> str:
    """`NET/IB` for every RDMA network name (IB, IBext, IBext_v11), `NET/Socket`, else NET/<name>."""
    if name == "Socket":
        return "NET/Socket"
    return "NET/IB" if _RDMA_NET.match(name) else f"NET/{name}"


def _rdma_words(net: str) -> str:
    return "NCCL's IB transport" if net == "IB" else f"NCCL's external IB plugin {net}"


@dataclass(frozen=True)
class Transport:
    kind: str  # NET/IB (any RDMA network), NET/Socket, NET/<other>, P2P, SHM, unknown
    detail: str
    evidence: str  # "channels" (via lines) or "plugin" (Using network) or "none"
    net: str | None = None  # the network's own name: IB, IBext_v11, Socket, ...

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
    ring_gdr: bool | None = None  # "Connected all rings, use ring PXN p GDR g"
    ring_pxn: bool | None = None
    ib_no_device: bool = False
    ib_init_failed: bool = False
    env: dict[str, str] = field(default_factory=dict)
    nnodes: int | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def gdr_used(self) -> bool:
        return any("GDRDMA" in t for t in self.via) or self.ring_gdr is True

    @property
    def net_devices(self) -> list[int]:
        """The network device indices (`NET/<net>/<dev>`) that RDMA channels go through."""
        devs = set()
        for t in self.via:
            parts = t.split("/")
            if parts[0] == "NET" and len(parts) > 2 and net_kind(parts[1]) == "NET/IB" \
                    and parts[2].isdigit():
                devs.add(int(parts[2]))
        return sorted(devs)

    def _kinds(self) -> dict[str, str]:
        """Channel kind -> the network name behind it (NET/IB -> IBext_v11, P2P -> P2P)."""
        kinds: dict[str, str] = {}
        for t in self.via:
            parts = t.split("/")
            if parts[0] == "NET" and len(parts) > 1:
                kinds.setdefault(net_kind(parts[1]), parts[1])
            else:
                kinds.setdefault(parts[0], parts[0])
        return kinds

    @property
    def transport(self) -> Transport:
        kinds = self._kinds()
        paths = ", ".join(sorted(self.via))
        if kinds:
            if "NET/Socket" in kinds:
                return Transport("NET/Socket", f"TCP sockets (channels via {paths})", "channels",
                                 "Socket")
            if "NET/IB" in kinds:
                net = kinds["NET/IB"]
                return Transport("NET/IB", f"RDMA through {_rdma_words(net)} (channels via {paths})",
                                 "channels", net)
            nets = sorted(k for k in kinds if k.startswith("NET/"))
            if nets:
                return Transport(nets[0], f"network plugin {kinds[nets[0]]} (channels via {paths})",
                                 "channels", kinds[nets[0]])
            if "P2P" in kinds:
                return Transport("P2P", f"GPU peer-to-peer inside one node, NVLink or PCIe "
                                        f"(channels via {paths})", "channels")
            if "SHM" in kinds:
                return Transport("SHM", f"shared memory inside one node (channels via {paths})",
                                 "channels")
            return Transport("unknown", f"channels via {paths}", "channels")
        if self.networks:
            net = self.networks[-1]
            kind = net_kind(net)
            if kind == "NET/IB":
                what = f"RDMA through {_rdma_words(net)}"
            elif kind == "NET/Socket":
                what = "TCP sockets"
            else:
                what = f"network plugin {net}"
            return Transport(kind, f"{what} (no channel lines in the log)", "plugin", net)
        return Transport("unknown", "the log names no transport", "none")


def _dev_names(listing: str) -> list[str]:
    return [m.group("name") for m in _DEV.finditer(listing)]


def _message(raw: str) -> tuple[str, str] | None:
    """(level, message) of an NCCL line, with or without its `NCCL INFO` prefix."""
    if m := _LINE.search(raw):
        return m.group("level"), m.group("msg").strip()
    bare = raw.strip()
    if _BARE.match(bare):
        return "INFO", bare
    return None


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
    elif r := _RING.match(msg):
        log.ring_pxn = r.group("pxn") != "0"
        log.ring_gdr = r.group("gdr") != "0"
        log.gdr_disabled |= not log.ring_gdr
    _flags(log, msg)


def _flags(log: NcclLog, msg: str) -> None:
    """Lines that only switch a flag (or set the node count once)."""
    log.gdr_disabled |= "GPU Direct RDMA Disabled" in msg
    log.ib_no_device |= msg.startswith("NET/IB : No device found")
    log.ib_init_failed |= msg.startswith("Failed to initialize NET plugin IB")
    if (nn := _NNODES.search(msg)) and log.nnodes is None:
        log.nnodes = int(nn.group("n"))


def parse(text: str) -> NcclLog:
    log = NcclLog()
    for raw in text.splitlines():
        got = _message(raw)
        if got is None:
            continue
        log.lines += 1
        _read(log, *got)
    if log.lines == 0:
        raise ParseError(COMMAND, "no 'NCCL INFO' line (was NCCL_DEBUG=INFO set?)", text)
    return log
