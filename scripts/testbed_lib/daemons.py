"""Per-node daemons: sshd (own host key) and dockerd (own data root), plus fault helpers."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

from testbed_lib.layout import Instance, Node
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
AuthorizedKeysFile /root/.ssh/authorized_keys
MaxSessions 64
MaxStartups 200:30:400
X11Forwarding no
PrintMotd no
AcceptEnv none
# Node tools first: simulated hardware (/usr/local/sbin, per node), then testbed tools
# (the Debian docker client, matching the node's dockerd, ahead of any newer client).
SetEnv PATH=/usr/local/sbin:{tools}:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
Subsystem sftp internal-sftp
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
    if sshd_running(node):
        return
    cfg = node.dir / "etc" / "sshd_config"
    ensure_tools_dir()
    cfg.write_text(SSHD_CONFIG.format(name=node.name, hostkey=hostkey(node),
                                      pidfile=sshd_pidfile(node), tools=TOOLS))
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
    if not dockerd_running(node):
        (node.dir / "docker").mkdir(exist_ok=True)
        log = open(node.dir / "dockerd.log", "ab")  # noqa: SIM115
        subprocess.Popen(
            [*node.nsenter(), "dockerd", "--data-root", str(node.dir / "docker"),
             "--exec-root", "/run/docker", "--pidfile", "/run/docker.pid",
             "-H", "unix:///run/docker.sock", "--storage-driver", "overlay2",
             "--userland-proxy=false", "--log-level", "warn"],
            stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
    deadline = time.monotonic() + wait_s
    while True:
        if docker(node, "version", "--format", "{{.Server.Version}}", check=False,
                  timeout=10).returncode == 0:
            return
        if time.monotonic() > deadline:
            raise TestbedError(f"{node.name}: dockerd not ready (see {node.dir / 'dockerd.log'})")
        time.sleep(0.2)


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
