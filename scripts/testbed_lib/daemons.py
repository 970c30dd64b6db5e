"""Per-node daemons: sshd (own host key) and dockerd (own data root), plus fault helpers."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

from testbed_lib.layout import Instance, Node
from testbed_lib.net import netns_pids
from testbed_lib.sh import TestbedError, run

SSHD_CONFIG = """\
# Written by scripts/testbed for {name}.
ListenAddress 0.0.0.0
ListenAddress ::
Port 22
HostKey {hostkey}
PidFile {pidfile}
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
AuthorizedKeysFile .ssh/authorized_keys
MaxSessions 64
MaxStartups 200:30:400
X11Forwarding no
PrintMotd no
AcceptEnv none
# Node tools first: simulated hardware (/usr/local/sbin, per node), then testbed tools
# (the Debian docker client, matching the node's dockerd, ahead of any newer client).
SetEnv PATH=/usr/local/sbin:{tools}:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
# OpenSSH's sftp-server behind a switch: `scripts/testbed hang NODE --during-sftp-write GLOB`
Subsystem sftp {sftp}
"""

TOOLS = Path("/var/lib/dgxtb/tools")


def ensure_tools_dir() -> None:
    TOOLS.mkdir(parents=True, exist_ok=True)
    link = TOOLS / "docker"
    if Path("/usr/bin/docker").exists() and not link.is_symlink():
        link.symlink_to("/usr/bin/docker")


def _alive(pidfile: Path, needle: str) -> int | None:
    try:
        pid = int(pidfile.read_text().strip())
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except (OSError, ValueError):
        return None
    return pid if needle in cmd else None


def _kill(pid: int, wait_s: float = 10.0) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if not Path(f"/proc/{pid}").exists():
            return
        # reap if it is our child; otherwise just poll
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


# -- sshd ------------------------------------------------------------------------------------

def hostkey(node: Node) -> Path:
    return node.dir / "etc" / "ssh_host_ed25519_key"


def ensure_hostkey(node: Node, regenerate: bool = False) -> None:
    key = hostkey(node)
    if regenerate:
        for p in (key, key.with_suffix(".pub")):
            if p.exists():
                p.unlink()
    if not key.exists():
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"{node.name}-hostkey",
             "-f", str(key)])


def ensure_authorized(node: Node) -> None:
    pub = Path(str(node.inst.key) + ".pub").read_text()
    ak = node.dir / "root" / ".ssh" / "authorized_keys"
    if not ak.exists() or ak.read_text() != pub:
        ak.write_text(pub)
    os.chmod(ak, 0o600)


def sshd_pidfile(node: Node) -> Path:
    return node.dir / "sshd.pid"


def sshd_running(node: Node) -> bool:
    return _alive(sshd_pidfile(node), "sshd") is not None


def start_sshd(node: Node) -> None:
    cfg = node.dir / "etc" / "sshd_config"
    wanted = SSHD_CONFIG.format(name=node.name, hostkey=hostkey(node),
                                pidfile=sshd_pidfile(node), tools=TOOLS,
                                sftp=sftp_subsystem(node))
    pid = _alive(sshd_pidfile(node), "sshd")
    if pid is not None:
        if cfg.exists() and cfg.read_text() == wanted:
            return
        _kill(pid)  # a newer config: restart the listener (open sessions live on)
    ensure_tools_dir()
    write_sftp_subsystem(node)
    cfg.write_text(wanted)
    run([*node.nsenter(), "/usr/sbin/sshd", "-f", str(cfg), "-E", str(node.dir / "sshd.log")])
    deadline = time.monotonic() + 5
    while not sshd_running(node):
        if time.monotonic() > deadline:
            raise TestbedError(f"{node.name}: sshd did not start (see {node.dir / 'sshd.log'})")
        time.sleep(0.02)


def stop_sshd(node: Node) -> None:
    pid = _alive(sshd_pidfile(node), "sshd")
    if pid:
        _kill(pid)
    # sessions that outlive the listener are part of "sshd killed" too
    out = run(["ip", "netns", "pids", node.netns], check=False).stdout.split()
    for p in out:
        with contextlib.suppress(OSError):
            cmd = Path(f"/proc/{p}/cmdline").read_bytes()
            if cmd.startswith(b"sshd") or b"/sshd" in cmd.split(b"\0")[0]:
                os.kill(int(p), signal.SIGKILL)


def accepted_logins(node: Node) -> list[str]:
    """sshd's "Accepted publickey for USER from ADDR ..." lines, one per login."""
    try:
        text = (node.dir / "sshd.log").read_text(errors="replace")
    except FileNotFoundError:
        return []
    return [ln for ln in text.splitlines() if ln.startswith("Accepted ")]


def known_hosts_lines(node: Node) -> str:
    """The node's host key under both management addresses (IPv4, IPv6), one line each."""
    pub = hostkey(node).with_suffix(".pub").read_text().split()
    return "".join(f"{ip} {pub[0]} {pub[1]}\n" for ip in (node.mgmt_ip, node.mgmt_ip6))


# -- a hung sshd: accepts TCP, never speaks ---------------------------------------------------

BLACKHOLE = (
    "import socket,time\n"
    "s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
    "s.bind(('0.0.0.0', 22)); s.listen(128); held=[]\n"
    "while True:\n"
    "    c,_=s.accept(); held.append(c)\n"
)


def hang_pidfile(node: Node) -> Path:
    return node.dir / "hang.pid"


def start_hang(node: Node) -> None:
    stop_sshd(node)
    if _alive(hang_pidfile(node), "python3"):
        return
    proc = subprocess.Popen([*node.nsenter(), "/usr/bin/python3", "-c", BLACKHOLE],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    hang_pidfile(node).write_text(f"{proc.pid}\n")
    time.sleep(0.3)


def stop_hang(node: Node) -> None:
    pid = _alive(hang_pidfile(node), "python3")
    if pid:
        _kill(pid, 2)
    if hang_pidfile(node).exists():
        hang_pidfile(node).unlink()
    sftp_trap(node).unlink(missing_ok=True)
    _kill_frozen(node)


# -- a node that stops answering in the middle of an SFTP write --------------------------------
#
# `hang NODE --during-sftp-write GLOB` arms a one-shot trap: the next SFTP session on NODE
# runs OpenSSH's sftp-server behind a small relay that reads the client's requests. Once a
# file whose name matches GLOB has been opened for writing, the first write request is not
# passed on: instead every sshd process of the node (listener and sessions, this one
# included) and the relay itself are stopped (SIGSTOP). The TCP connections stay up, the
# kernel still acknowledges, and nothing answers: a node that hung mid-write. New
# connections are accepted and get no banner, as with `hang`. `unhang`/`up` kill what was
# frozen and start sshd again.

SFTP_SERVER = "/usr/lib/openssh/sftp-server"

SFTP_WRAPPER = """#!/bin/sh
# Written by scripts/testbed: {node}'s SFTP server, or the write trap when it is armed.
[ -e {trap} ] && exec /usr/bin/python3 {freezer} {trap}
exec {server}
"""

FREEZER = r"""import fnmatch, os, signal, struct, subprocess, sys
SERVER = %(server)r
trap = sys.argv[1]
try:
    with open(trap) as fh:
        pattern = fh.read().strip() or "*"
    os.unlink(trap)  # one shot
except OSError:
    os.execv(SERVER, [SERVER])
child = subprocess.Popen([SERVER], stdin=subprocess.PIPE)  # its answers go straight out
netns = os.readlink("/proc/self/ns/net")


def freeze():
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.readlink(f"/proc/{pid}/ns/net") != netns:
                continue
            with open(f"/proc/{pid}/comm") as fh:
                comm = fh.read().strip()
        except OSError:
            continue
        if comm.startswith("sshd") or comm == "sftp-server":
            os.kill(int(pid), signal.SIGSTOP)
    os.kill(os.getpid(), signal.SIGSTOP)


def read(n):
    data = b""
    while len(data) < n:
        got = os.read(0, n - len(data))
        if not got:
            sys.exit(0)
        data += got
    return data


armed = False
while True:
    head = read(4)
    body = read(struct.unpack("!I", head)[0])
    if body[0] == 3:  # SSH_FXP_OPEN: id, filename, pflags
        (n,) = struct.unpack("!I", body[5:9])
        name = os.path.basename(body[9:9 + n].decode("utf-8", "replace"))
        (pflags,) = struct.unpack("!I", body[9 + n:13 + n])
        armed = armed or bool(pflags & 0x02 and fnmatch.fnmatch(name, pattern))
    elif body[0] == 6 and armed:  # SSH_FXP_WRITE: the write has begun
        freeze()
    child.stdin.write(head + body)
    child.stdin.flush()
"""


def sftp_trap(node: Node) -> Path:
    return node.dir / "sftp-trap"


def sftp_subsystem(node: Node) -> Path:
    return node.dir / "etc" / "sftp-subsystem"


def write_sftp_subsystem(node: Node) -> None:
    freezer = node.dir / "etc" / "sftp-freeze.py"
    freezer.write_text(FREEZER % {"server": SFTP_SERVER})
    wrapper = sftp_subsystem(node)
    wrapper.write_text(SFTP_WRAPPER.format(node=node.name, trap=sftp_trap(node),
                                           freezer=freezer, server=SFTP_SERVER))
    wrapper.chmod(0o755)


def arm_sftp_trap(node: Node, pattern: str) -> None:
    cfg = node.dir / "etc" / "sshd_config"
    if not cfg.exists() or str(sftp_subsystem(node)) not in cfg.read_text():
        stop_sshd(node)  # an sshd started before this switch existed: give it the wrapper
    start_sshd(node)
    sftp_trap(node).write_text(pattern + "\n")


def _kill_frozen(node: Node) -> None:
    """SIGKILL every stopped process of the node (what the write trap froze)."""
    killed = []
    for p in run(["ip", "netns", "pids", node.netns], check=False).stdout.split():
        with contextlib.suppress(OSError, ValueError):
            stat = Path(f"/proc/{p}/stat").read_text()
            if stat.rsplit(")", 1)[1].split()[0] == "T":
                os.kill(int(p), signal.SIGKILL)
                killed.append(p)
    deadline = time.monotonic() + 5
    while killed and time.monotonic() < deadline:
        killed = [p for p in killed if Path(f"/proc/{p}/cmdline").exists()
                  and Path(f"/proc/{p}/cmdline").read_bytes()]
        time.sleep(0.05)


# -- dockerd ---------------------------------------------------------------------------------

def docker(node: Node, *args: str, check: bool = True, timeout: float = 600,
           input: str | None = None) -> subprocess.CompletedProcess[str]:
    return run([_docker_client(), "-H", f"unix://{node.docker_sock}", *args], check=check,
               timeout=timeout, input=input)


def _docker_client() -> str:
    return "/usr/bin/docker" if Path("/usr/bin/docker").exists() else "docker"


def dockerd_pidfile(node: Node) -> Path:
    return node.dir / "run" / "docker.pid"


def dockerd_running(node: Node) -> bool:
    return _alive(dockerd_pidfile(node), "dockerd") is not None


def start_dockerd(node: Node, wait_s: float = 90) -> None:
    proc = None
    if not dockerd_running(node):
        _clear_after_crash(node)
        (node.dir / "docker").mkdir(exist_ok=True)
        log = open(node.dir / "dockerd.log", "ab")  # noqa: SIM115
        proc = subprocess.Popen(
            [*node.nsenter(), "dockerd", "--data-root", str(node.dir / "docker"),
             "--exec-root", "/run/docker", "--pidfile", "/run/docker.pid",
             "-H", "unix:///run/docker.sock", "--storage-driver", "overlay2",
             "--userland-proxy=false", "--log-level", "warn"],
            stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
    deadline = time.monotonic() + wait_s
    while not dockerd_answers(node, min(10.0, max(1.0, deadline - time.monotonic()))):
        if proc is not None and proc.poll() is not None:
            raise TestbedError(f"{node.name}: dockerd exited ({proc.returncode}): "
                               f"{_last_line(node.dir / 'dockerd.log')}")
        if time.monotonic() > deadline:
            raise TestbedError(f"{node.name}: dockerd not ready after {wait_s:g}s "
                               f"(see {node.dir / 'dockerd.log'})")
        time.sleep(0.2)


def _clear_after_crash(node: Node) -> None:
    """What a SIGKILLed dockerd leaves that stops the next one: its pid file, whose pid may
    live on as a zombie ("pid file found"), and its containerd, dying or a zombie, whose pid
    file makes the new dockerd wait for it ("timeout waiting for containerd to start").
    The containers' shims survive; the new containerd takes them over."""
    dockerd_pidfile(node).unlink(missing_ok=True)
    pidfile = node.dir / "run" / "docker" / "containerd" / "containerd.pid"
    pid = _alive(pidfile, "containerd")
    if pid is not None and pid in netns_pids(node):
        _kill(pid, 10)
    pidfile.unlink(missing_ok=True)


def _last_line(path: Path) -> str:
    try:
        lines = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "(no log)"
    return lines[-1] if lines else "(empty log)"


def dockerd_answers(node: Node, timeout: float) -> bool:
    """Whether the node's dockerd answers the API. After a SIGKILL the new dockerd accepts on
    its socket but answers only once it has cleaned up the old containers (10 s and more):
    a client that times out then is "not yet", not a failure."""
    try:
        return docker(node, "version", "--format", "{{.Server.Version}}", check=False,
                      timeout=timeout).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def stop_dockerd(node: Node, remove_containers: bool = False) -> None:
    pid = _alive(dockerd_pidfile(node), "dockerd")
    if not pid:
        return
    if remove_containers:
        ids = docker(node, "ps", "-aq", check=False, timeout=30).stdout.split()
        if ids:
            docker(node, "rm", "-f", *ids, check=False, timeout=120)
    _kill(pid, 30)


def has_image(node: Node, tag: str) -> bool:
    return docker(node, "image", "inspect", tag, check=False, timeout=30).returncode == 0


def import_base(first: Node, others: list[Node], tar: Path, tags: list[str]) -> None:
    """Load the locally made Debian base into every node's daemon (no registry involved).

    Imported once, then copied with save | load, so every node holds the same image ID.
    """
    if not has_image(first, tags[0]):
        docker(first, "import", "--change", 'CMD ["/bin/bash"]', str(tar), tags[0], timeout=900)
    for t in tags[1:]:
        docker(first, "tag", tags[0], t)
    for node in others:
        if has_image(node, tags[0]):
            continue
        save = subprocess.Popen([_docker_client(), "-H", f"unix://{first.docker_sock}", "save", *tags],
                                stdout=subprocess.PIPE)
        load = subprocess.run([_docker_client(), "-H", f"unix://{node.docker_sock}", "load", "-q"],
                              stdin=save.stdout, capture_output=True, text=True, check=False)
        assert save.stdout is not None
        save.stdout.close()
        save.wait()
        if load.returncode != 0 or save.returncode != 0:
            raise TestbedError(f"{node.name}: loading the base image failed: {load.stderr}")


def kill_all(node: Node) -> None:
    """Everything left in the node's network namespace (containers, sessions, stragglers)."""
    out = run(["ip", "netns", "pids", node.netns], check=False).stdout.split()
    for p in out:
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(p), signal.SIGKILL)


def instance_uses_docker(inst: Instance) -> bool:
    return inst.docker
