"""Netplan's YAML (`/etc/netplan/*.yaml`): what each interface will have after a reboot.

Read as netplan reads it (netplan.readthedocs.io "YAML configuration" and "netplan
generate": every `*.yaml` under /etc/netplan, in lexical order, later files overriding
scalar keys of earlier ones and appending to sequences). Only `network.ethernets` matters
here: per interface `addresses`, `mtu`, `dhcp4`/`dhcp6`. A file dgxcluster cannot read
(mode 0600 and no root) is kept as an error, never treated as empty.

`ARGV` prints each file after a `@@file PATH` marker, through `sudo -n` when the login
cannot read it, and `@@unreadable PATH` when neither works.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import IPv4Interface
from typing import Any

import yaml

from dgxcluster.facts import ParseError

COMMAND = "cat /etc/netplan/*.yaml"
DIRECTORY = "/etc/netplan"
SCRIPT = (
    'for f in "$1"/*.yaml; do [ -e "$f" ] || continue; echo "@@file $f"; '
    'cat "$f" 2>/dev/null || sudo -n cat "$f" 2>/dev/null || echo "@@unreadable $f"; done; true'
)
ARGV = ["sh", "-c", SCRIPT, "sh", DIRECTORY]


@dataclass
class IfaceConf:
    addresses: list[IPv4Interface] = field(default_factory=list)
    other_addresses: list[str] = field(default_factory=list)  # IPv6, or unreadable
    mtu: int | None = None
    dhcp4: bool | None = None
    dhcp6: bool | None = None
    files: list[str] = field(default_factory=list)


@dataclass
class Netplan:
    files: dict[str, str] = field(default_factory=dict)  # path -> text
    unreadable: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # files that are not valid netplan YAML
    ethernets: dict[str, IfaceConf] = field(default_factory=dict)


def split(text: str) -> tuple[dict[str, str], list[str]]:
    """ARGV's output: each file's text by path, and the files it could not read."""
    files: dict[str, list[str]] = {}
    unreadable: list[str] = []
    cur: str | None = None
    for ln in text.splitlines():
        if ln.startswith("@@file "):
            cur = ln[len("@@file "):]
            files[cur] = []
        elif ln.startswith("@@unreadable "):
            unreadable.append(ln[len("@@unreadable "):])
            files.pop(ln[len("@@unreadable "):], None)
            cur = None
        elif cur is not None:
            files[cur].append(ln)
    return {p: "\n".join(v) + "\n" for p, v in files.items()}, unreadable


def _bool(v: Any) -> bool | None:
    if isinstance(v, bool):
        return v
    if isinstance(v, str) and v.lower() in ("yes", "no", "true", "false", "on", "off"):
        return v.lower() in ("yes", "true", "on")
    return None


def _merge(conf: IfaceConf, entry: dict[str, Any], path: str) -> None:
    conf.files.append(path)
    for a in entry.get("addresses") or []:
        text = next(iter(a)) if isinstance(a, dict) and a else a  # `- 10.0.0.1/24: {label: x}`
        try:
            conf.addresses.append(IPv4Interface(str(text)))
        except ValueError:
            conf.other_addresses.append(str(text))
    if "mtu" in entry:
        conf.mtu = entry["mtu"] if isinstance(entry["mtu"], int) else None
    for key in ("dhcp4", "dhcp6"):
        if key in entry:
            setattr(conf, key, _bool(entry[key]))


def parse_file(text: str, path: str = "<netplan>") -> dict[str, dict[str, Any]]:
    """One file's `network.ethernets` mapping (ParseError when it is not netplan YAML)."""
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ParseError(COMMAND, f"{path}: not YAML ({exc.__class__.__name__})", text) from None
    if doc is None:
        return {}
    net = doc.get("network") if isinstance(doc, dict) else None
    if not isinstance(net, dict):
        raise ParseError(COMMAND, f"{path}: no 'network:' mapping", text)
    eth = net.get("ethernets") or {}
    if not isinstance(eth, dict) or not all(isinstance(v, dict) or v is None
                                            for v in eth.values()):
        raise ParseError(COMMAND, f"{path}: 'ethernets' is not a mapping of interfaces", text)
    return {str(k): (v or {}) for k, v in eth.items()}


def parse(text: str) -> Netplan:
    """ARGV's output, merged in lexical file order as netplan does."""
    files, unreadable = split(text)
    out = Netplan(files=files, unreadable=unreadable)
    for path in sorted(files):
        try:
            eth = parse_file(files[path], path)
        except ParseError as exc:
            out.errors.append(exc.reason)
            continue
        for name, entry in eth.items():
            _merge(out.ethernets.setdefault(name, IfaceConf()), entry, path)
    return out
