"""More SSH users on the nodes: a second operator, not root, who can run docker.

Nodes share the host's /etc, so a user is not added to the host: each node gets its own
copies of /etc/passwd, /etc/group and /etc/shadow (the host's, plus these users, each in
the `docker` group) bind-mounted in its mount namespace, and its own /home. Each user has
an SSH key of their own (`<testbed>/id_<user>`), in `~/.ssh/authorized_keys` on every node.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from testbed_lib.layout import Instance, Node
from testbed_lib.sh import TestbedError, run

USER_RE = re.compile(r"^[a-z_][a-z0-9_-]{0,30}$")
FIRST_UID = 2000
FILES = ("passwd", "group", "shadow")


@dataclass(frozen=True)
class User:
    name: str
    uid: int

    @property
    def home(self) -> str:
        return f"/home/{self.name}"


def check_name(name: str) -> str:
    if not USER_RE.match(name) or name == "root":
        raise TestbedError(f"--user {name!r}: a lower-case user name other than root")
    return name


def allocate(names: list[str], host_passwd: str, host_group: str) -> list[User]:
    """Uids (= gids) from FIRST_UID up, skipping any the host already uses: the same on every
    node, so files keep their owners when nodes exchange them."""
    taken = {int(f[2]) for f in (ln.split(":") for ln in host_passwd.splitlines()) if len(f) > 2}
    taken |= {int(f[2]) for f in (ln.split(":") for ln in host_group.splitlines()) if len(f) > 2}
    existing = {ln.split(":", 1)[0] for ln in host_passwd.splitlines()}
    users, uid = [], FIRST_UID
    for name in names:
        if name in existing:
            raise TestbedError(f"--user {name}: the host already has a user of that name")
        while uid in taken:
            uid += 1
        users.append(User(name, uid))
        taken.add(uid)
    return users


def user_db(users: list[User], host: dict[str, str]) -> dict[str, str]:
    """The node's passwd, group and shadow: the host's, plus each user (in group docker)."""
    passwd = host["passwd"].rstrip("\n").splitlines()
    group = host["group"].rstrip("\n").splitlines()
    shadow = host["shadow"].rstrip("\n").splitlines()
    for u in users:
        passwd.append(f"{u.name}:x:{u.uid}:{u.uid}::{u.home}:/bin/bash")
        group.append(f"{u.name}:x:{u.uid}:")
        shadow.append(f"{u.name}:*:19000:0:99999:7:::")  # no password; not locked ('!')
    docker = [i for i, ln in enumerate(group) if ln.startswith("docker:")]
    if users and not docker:
        raise TestbedError("the host has no docker group (install docker.io)")
    for i in docker:
        name, pw, gid, members = group[i].split(":", 3)
        have = [m for m in members.split(",") if m]
        group[i] = ":".join([name, pw, gid, ",".join(have + [u.name for u in users
                                                             if u.name not in have])])
    return {"passwd": "\n".join(passwd) + "\n", "group": "\n".join(group) + "\n",
            "shadow": "\n".join(shadow) + "\n"}


def key(inst: Instance, name: str) -> Path:
    return inst.root / f"id_{name}"


def ensure_keys(inst: Instance) -> None:
    """Each user's SSH key pair, made once for the testbed before its nodes come up in
    parallel (made per node, two nodes raced to create the same file and ssh-keygen refused)."""
    for name in inst.users:
        k = key(inst, name)
        if not k.exists():
            run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"dgxtb-{name}",
                 "-f", str(k)])


def ensure(node: Node, names: list[str]) -> list[User]:
    """The node's user database, homes and authorized keys for `names` (idempotent; the
    keys themselves come from `ensure_keys`)."""
    host = {f: Path(f"/etc/{f}").read_text() for f in FILES}
    users = allocate(names, host["passwd"], host["group"])
    etc = node.dir / "etc"
    home = node.dir / "home"
    home.mkdir(mode=0o755, exist_ok=True)
    for name, text in user_db(users, host).items():
        target = etc / name
        if not target.exists() or target.read_text() != text:
            with open(target, "w") as fh:  # in place: a bind mount keeps showing this inode
                fh.write(text)
        os.chmod(target, 0o640 if name == "shadow" else 0o644)
    for u in users:
        k = key(node.inst, u.name)
        ssh = home / u.name / ".ssh"
        ssh.mkdir(parents=True, exist_ok=True)
        (ssh / "authorized_keys").write_text(Path(str(k) + ".pub").read_text())
        for p, mode in ((home / u.name, 0o755), (ssh, 0o700), (ssh / "authorized_keys", 0o600)):
            os.chmod(p, mode)
            os.chown(p, u.uid, u.uid)
    _mount(node, [(str(etc / f), f"/etc/{f}") for f in FILES] + [(str(home), "/home")])
    return users


def _mount(node: Node, binds: list[tuple[str, str]]) -> None:
    enter = ["nsenter", f"--mount={node.mnt_ns}", "--"]
    mounted = {ln.split()[4] for ln in run([*enter, "cat", "/proc/self/mountinfo"]).stdout.splitlines()}
    for source, target in binds:
        if target not in mounted:
            run([*enter, "mount", "--bind", source, target])
