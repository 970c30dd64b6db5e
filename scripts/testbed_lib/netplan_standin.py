#!/usr/bin/python3
"""netplan stand-in (testbed only): the testbed's nodes have no netplan and no networkd, so
`netplan apply` here reads the same YAML netplan reads (/etc/netplan/*.yaml, in lexical
order; later files override a device's scalar keys and add to its sequences, netplan's
merge) and applies each `ethernets` device's IPv4 `addresses` (replacing the device's IPv4
addresses, as networkd does for a device it manages) and `mtu` with `ip` in the node's
network namespace. Devices no file names are left alone. Everything it prints says
"netplan stand-in". `netplan generate` only parses. Installed as the node's
/usr/local/sbin/netplan by scripts/testbed.
"""

from __future__ import annotations

import glob
import os
import subprocess
import sys

NAME = "netplan stand-in (testbed)"
DIR = "/etc/netplan"


def say(text: str) -> None:
    sys.stderr.write(f"{NAME}: {text}\n")


def load() -> dict[str, dict[str, object]]:
    import yaml

    merged: dict[str, dict[str, object]] = {}
    for path in sorted(glob.glob(os.path.join(DIR, "*.yaml"))):
        if os.stat(path).st_mode & 0o077:
            say(f"** (generate:{os.getpid()}): WARNING **: Permissions for {path} are too open. "
                "Netplan configuration should NOT be accessible by others.")
        try:
            with open(path, encoding="utf-8") as fh:
                doc = yaml.safe_load(fh) or {}
        except (OSError, yaml.YAMLError) as exc:
            say(f"{path}: {exc}")
            sys.exit(1)
        net = doc.get("network") if isinstance(doc, dict) else None
        if not isinstance(net, dict):
            say(f"{path}: Error in network definition: expected a 'network' mapping")
            sys.exit(1)
        for name, conf in (net.get("ethernets") or {}).items():
            entry = merged.setdefault(str(name), {"addresses": [], "mtu": None})
            for addr in (conf or {}).get("addresses") or []:
                entry["addresses"].append(str(addr))  # type: ignore[union-attr]
            if conf and "mtu" in conf:
                entry["mtu"] = int(conf["mtu"])
    return merged


def ip(*args: str) -> None:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        say(f"ip {' '.join(args)}: {proc.stderr.strip()}")
        sys.exit(1)


def apply(merged: dict[str, dict[str, object]]) -> None:
    for name, conf in merged.items():
        if subprocess.run(["ip", "link", "show", "dev", name], capture_output=True,
                          check=False).returncode != 0:
            say(f"{name}: no such device here, skipped")
            continue
        if conf["mtu"]:
            ip("link", "set", "dev", name, "mtu", str(conf["mtu"]))
        ip("-4", "addr", "flush", "dev", name)
        for addr in conf["addresses"]:  # type: ignore[attr-defined]
            if ":" not in addr:
                ip("addr", "add", addr, "dev", name)
        ip("link", "set", "dev", name, "up")
    say(f"applied {len(merged)} device(s) from {DIR} with ip")


def main(argv: list[str]) -> int:
    cmd = argv[0] if argv else "help"
    if cmd == "apply":
        apply(load())
        return 0
    if cmd == "generate":
        load()
        return 0
    say("usage: netplan apply | generate (the testbed's stand-in knows only these)")
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
