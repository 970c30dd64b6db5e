#!/usr/bin/python3
"""systemctl stand-in (testbed only, a double): the testbed's nodes have no systemd (this
machine's PID 1 is not systemd), so this does, on the node's own /etc/systemd/system (bound
over the host's inside the node's mount namespace), exactly what dgxcluster asks of
systemctl and no more, as systemd 255 (Ubuntu 24.04, DGX OS 7) does it:
- `daemon-reload`: nothing to reload here (units are read when used); exit 0, silent;
- `enable UNIT`: the symlink `<WantedBy=>.wants/UNIT -> /etc/systemd/system/UNIT`, with
  "Created symlink ..." on stderr; a unit file that does not exist: "Failed to enable unit:
  Unit file UNIT does not exist.", exit 1;
- `disable UNIT`: every `*.wants/UNIT` symlink removed, "Removed ..." per link on stderr;
- `is-enabled UNIT`: prints `enabled` (exit 0), `disabled` (exit 1) or `not-found` (exit 4,
  EXIT_PROGRAM_OR_SERVICES_STATUS_UNKNOWN), as src/systemctl/systemctl-is-enabled.c does.
Anything else says so and exits 1. `sudo -n systemctl ...` reaches it too (first on PATH).

`--testbed-boot` is the testbed's own, not systemctl's: what systemd does at boot for
multi-user.target, reduced to what dgxcluster installs: run the `ExecStart=` of every unit
enabled in multi-user.target.wants (oneshot, in the background, as `User=`), its output
appended to /run/dgxtb-boot-<UNIT>.log. `scripts/testbed reboot` calls it.
"""

from __future__ import annotations

import os
import pwd
import shlex
import subprocess
import sys
from pathlib import Path

DIR = Path("/etc/systemd/system")
NAME = "systemctl stand-in (testbed)"
EXIT_NOT_FOUND = 4


def err(text: str) -> None:
    sys.stderr.write(text + "\n")


def _wanted_by(unit: Path) -> list[str]:
    """The [Install] section's WantedBy= targets."""
    out: list[str] = []
    section = ""
    for raw in unit.read_text().splitlines():
        line = raw.strip()
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
        elif section == "Install" and line.startswith("WantedBy="):
            out += line.split("=", 1)[1].split()
    return out


def _service(unit: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    section = ""
    for raw in unit.read_text().splitlines():
        line = raw.strip()
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
        elif section == "Service" and "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            out[key.strip()] = value.strip()
    return out


def _links(name: str) -> list[Path]:
    return sorted(p for p in DIR.glob(f"*.wants/{name}") if p.is_symlink())


def enable(name: str) -> int:
    unit = DIR / name
    if not unit.is_file():
        err(f"Failed to enable unit: Unit file {name} does not exist.")
        return 1
    for target in _wanted_by(unit):
        link = DIR / f"{target}.wants" / name
        if link.is_symlink() and os.readlink(link) == str(unit):
            continue
        link.parent.mkdir(parents=True, exist_ok=True)
        link.unlink(missing_ok=True)
        link.symlink_to(unit)
        err(f"Created symlink {link} \u2192 {unit}.")
    return 0


def disable(name: str) -> int:
    if not (DIR / name).is_file() and not _links(name):
        err(f"Failed to disable unit: Unit file {name} does not exist.")
        return 1
    for link in _links(name):
        link.unlink()
        err(f'Removed "{link}".')
    return 0


def is_enabled(name: str, quiet: bool = False) -> int:
    state, code = ("not-found", EXIT_NOT_FOUND) if not (DIR / name).is_file() else \
        ("enabled", 0) if _links(name) else ("disabled", 1)
    if not quiet:
        print(state)
    return code


def _unescape(word: str) -> str:
    return word.replace("%%", "%").replace("$$", "$")


def boot() -> int:
    """Start every unit multi-user.target wants: its ExecStart=, detached, as its User=."""
    for link in sorted((DIR / "multi-user.target.wants").glob("*.service")):
        if not link.resolve().is_file():
            continue
        svc = _service(link.resolve())
        argv = [_unescape(w) for w in shlex.split(svc.get("ExecStart", ""))]
        if not argv:
            continue
        user = svc.get("User")
        pw = pwd.getpwnam(user) if user else None
        log = open(f"/run/dgxtb-boot-{link.name}.log", "ab")  # noqa: SIM115
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8",
               "HOME": pw.pw_dir if pw else "/root"}

        def drop(pw: pwd.struct_passwd | None = pw) -> None:
            if pw is not None:
                os.initgroups(pw.pw_name, pw.pw_gid)
                os.setgid(pw.pw_gid)
                os.setuid(pw.pw_uid)

        subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd="/",
                         env=env, start_new_session=True, preexec_fn=drop)
        log.close()
        print(f"{NAME}: started {link.name}: {shlex.join(argv)}")
    return 0


def main(argv: list[str]) -> int:
    args = [a for a in argv if a not in ("-q", "--quiet", "--no-pager")]
    if args == ["daemon-reload"]:
        return 0
    if args == ["--testbed-boot"]:
        return boot()
    if len(args) == 2 and args[0] in ("enable", "disable", "is-enabled"):
        name = args[1] if "." in args[1] else f"{args[1]}.service"
        if args[0] == "is-enabled":
            return is_enabled(name, quiet=any(a in ("-q", "--quiet") for a in argv))
        return {"enable": enable, "disable": disable}[args[0]](name)
    err(f"{NAME}: only daemon-reload, enable, disable and is-enabled UNIT are emulated "
        f"(asked: {shlex.join(argv)})")
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
