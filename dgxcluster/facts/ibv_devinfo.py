"""`ibv_devinfo`: every RDMA device (hca_id), its firmware, and each port's state and MTU.

The format is `key:<tabs>value` lines; `hca_id:` starts a device and `port:` a port, whose
keys follow with deeper indentation. `-v` adds more keys (GIDs, capabilities), which are
ignored. With no device the tool says so ("No IB devices found", or "Failed to get IB
devices list" when the kernel has no RDMA support): that is an empty list, not an error.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from dgxcluster.facts import ParseError, content_lines

ARGV = ["ibv_devinfo"]
COMMAND = "ibv_devinfo"

_KV = re.compile(r"^(?P<indent>\s*)(?P<key>[A-Za-z_][A-Za-z0-9_ .\[\]-]*?)\s*:\s*(?P<value>.*)$")
_STATE = re.compile(r"^(?P<name>[A-Z_]+)\s*(?:\((?P<num>\d+)\))?$")
_MTU = re.compile(r"^(?P<bytes>\d+)\s*(?:\((?P<code>\d+)\))?$")
_NO_DEVICES = ("no ib devices found", "failed to get ib devices list")


@dataclass
class Port:
    number: int
    state: str = "UNKNOWN"  # PORT_ACTIVE, PORT_DOWN, PORT_INIT, ...
    max_mtu: int | None = None
    active_mtu: int | None = None
    link_layer: str | None = None  # Ethernet (RoCE) or InfiniBand

    @property
    def active(self) -> bool:
        return self.state == "PORT_ACTIVE"

    @property
    def short_state(self) -> str:
        return self.state.removeprefix("PORT_")


@dataclass
class Device:
    name: str
    transport: str | None = None
    fw_ver: str | None = None
    node_guid: str | None = None
    vendor_part_id: str | None = None
    board_id: str | None = None
    ports: list[Port] = field(default_factory=list)

    @property
    def active(self) -> bool:
        return any(p.active for p in self.ports)

    def port(self, number: int = 1) -> Port | None:
        return next((p for p in self.ports if p.number == number), None)


@dataclass
class DevInfo:
    devices: list[Device]
    message: str = ""  # the tool's own words when it found no device

    def get(self, name: str) -> Device | None:
        return next((d for d in self.devices if d.name == name), None)

    @property
    def names(self) -> list[str]:
        return [d.name for d in self.devices]


def _state(value: str) -> str:
    m = _STATE.match(value.strip())
    return m.group("name") if m else value.strip().upper()


def _mtu(value: str) -> int | None:
    m = _MTU.match(value.strip())
    return int(m.group("bytes")) if m else None


#: `key: value` lines of a port block, and how each value is read.
_PORT_FIELDS: dict[str, tuple[str, Callable[[str], object]]] = {
    "state": ("state", _state),
    "max_mtu": ("max_mtu", _mtu),
    "active_mtu": ("active_mtu", _mtu),
    "link_layer": ("link_layer", str),
}
#: `key: value` lines of a device block, kept as text.
_DEVICE_FIELDS = ("transport", "fw_ver", "node_guid", "vendor_part_id", "board_id")


def parse(text: str) -> DevInfo:
    lines = content_lines(text)
    devices: list[Device] = []
    dev: Device | None = None
    port: Port | None = None
    for line in lines:
        if not line.strip():
            continue
        m = _KV.match(line)
        if not m:
            continue
        key, value = m.group("key").strip(), m.group("value").strip()
        if key == "hca_id":
            if not value:
                raise ParseError(COMMAND, "hca_id without a device name", text)
            dev = Device(name=value)
            devices.append(dev)
            port = None
            continue
        if dev is None:
            continue  # banner or prompt before the first device
        if key == "port":
            try:
                port = Port(number=int(value))
            except ValueError:
                raise ParseError(COMMAND, f"port number {value!r} is not a number", text) from None
            dev.ports.append(port)
            continue
        if port is not None:
            if key in _PORT_FIELDS:
                attr, convert = _PORT_FIELDS[key]
                setattr(port, attr, convert(value))
        elif key in _DEVICE_FIELDS:
            setattr(dev, key, value)
    return _result(devices, lines, text)


def _result(devices: list[Device], lines: list[str], text: str) -> DevInfo:
    """The devices read; or none, when the tool said so; anything else is not understood."""
    if devices:
        for d in devices:
            if not d.ports:
                raise ParseError(COMMAND, f"device {d.name} lists no port", text)
        return DevInfo(devices)
    lowered = text.lower()
    for needle in _NO_DEVICES:
        if needle in lowered:
            msg = next(ln.strip() for ln in lines if needle in ln.lower())
            return DevInfo([], message=msg)
    raise ParseError(COMMAND, "no 'hca_id:' device block and no 'No IB devices found'", text)
