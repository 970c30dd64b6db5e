"""Each node's own /etc/systemd/system, the systemctl stand-in (a double: the testbed has no
systemd), and `reboot`: a power cut and a boot, for `serve.persist`.

Like /etc/netplan: inside each node's mount namespace `<node dir>/etc/systemd/system` is
bound over the host's, so units one node installs are that node's alone, and kept on "disk"
across a reboot. `systemctl_standin.py` becomes the node's /usr/local/sbin/systemctl (first
on sshd's PATH, ahead of the host's real one, which cannot work without systemd as PID 1).

A reboot (`reboot(node)`): every process of the node SIGKILLed at once, as a power cut ends
them: its sshd, dockerd, containerd, the containers' shims and everything below them (the
containers' own processes, whatever network they use), and processes SSH sessions left
(the watcher). Nothing is stopped gracefully (`docker kill`/`stop` would tell dockerd, which
records the exit; a power cut does not). Then, as boot does: dockerd started again (it
finds its containers' shims gone and marks them exited, as after a crash), sshd, and then
systemd's part: every unit enabled in multi-user.target.wants has its ExecStart= run
(`systemctl --testbed-boot`, the double's). Files on disk (the node dir) are kept.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from testbed_lib import daemons
from testbed_lib.layout import Node
from testbed_lib.sh import TestbedError, run

HOST_DIR = Path("/etc/systemd/system")
STANDIN = Path(__file__).resolve().parent / "systemctl_standin.py"


def node_dir(node: Node) -> Path:
    return node.dir / "etc" / "systemd" / "system"


def _mounted(node: Node) -> bool:
    out = run([*node.nsenter(), "cat", "/proc/self/mountinfo"], check=False).stdout
    return any(ln.split()[4] == str(HOST_DIR) for ln in out.splitlines() if len(ln.split()) > 4)


def ensure(node: Node) -> None:
    """The node's own unit directory, and the systemctl double on its PATH."""
    d = node_dir(node)
    (d / "multi-user.target.wants").mkdir(parents=True, exist_ok=True)
    d.chmod(0o755)
    if not HOST_DIR.is_dir():
        raise TestbedError(f"{HOST_DIR} is missing on this machine: the nodes' own unit "
                           "directories are bound over it")
    if not _mounted(node):
        run(["nsenter", f"--mount={node.mnt_ns}", "mount", "--bind", str(d), str(HOST_DIR)])
    target = node.sbin / "systemctl"
    if not target.exists() or target.read_bytes() != STANDIN.read_bytes():
        shutil.copyfile(STANDIN, target)
        target.chmod(0o755)


def enabled(node: Node) -> list[str]:
    """The units the node would start at boot."""
    wants = node_dir(node) / "multi-user.target.wants"
    return sorted(p.name for p in wants.glob("*.service")) if wants.is_dir() else []


def children_by_parent() -> dict[int, list[int]]:
    """Every process's children, by parent pid (read from /proc)."""
    kids: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        kids.setdefault(ppid, []).append(int(entry.name))
    return kids


def node_processes(node: Node) -> set[int]:
    """Every process of the node: those in its network namespace, and all below them
    (a container with its own network is a child of its shim, which is in the node's)."""
    roots = {int(p) for p in run(["ip", "netns", "pids", node.netns], check=False).stdout.split()}
    kids = children_by_parent()
    seen: set[int] = set()
    todo = list(roots)
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        todo += kids.get(pid, [])
    seen.discard(os.getpid())
    return seen


def power_cut(node: Node, wait_s: float = 30.0) -> int:
    """SIGKILL every process of the node at once (frozen first, so none forks or restarts
    another meanwhile); returns how many there were."""
    pids = node_processes(node)
    for sig in (signal.SIGSTOP, signal.SIGKILL):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        alive = [p for p in pids if Path(f"/proc/{p}/cmdline").exists()
                 and Path(f"/proc/{p}/cmdline").read_bytes()]
        if not alive:
            break
        for p in alive:
            with contextlib.suppress(ChildProcessError, OSError):
                os.waitpid(p, os.WNOHANG)
        time.sleep(0.05)
    return len(pids)


def _settled(pidfile: Path, wait_s: float = 60.0) -> None:
    """A SIGKILLed dockerd that a loaded machine has not finished ending yet still owns its
    pid file and socket; the next one must not take it for a running daemon."""
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        try:
            pid = int(pidfile.read_text().strip())
            alive = bool(Path(f"/proc/{pid}/cmdline").read_bytes())
        except (OSError, ValueError):
            return
        if not alive:
            return
        time.sleep(0.2)
    raise TestbedError(f"dockerd (pid file {pidfile}) still running {wait_s:g}s after the "
                       "power cut")


def boot_env() -> dict[str, str]:
    """What systemd gives a system service, with the node's PATH (simulated tools, then the
    testbed's docker client) as sshd sets it."""
    return {"PATH": f"/usr/local/sbin:{daemons.TOOLS}:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "LANG": "C.UTF-8"}


def reboot(node: Node, docker: bool) -> str:
    """Power cut, then boot: dockerd, sshd, the enabled units. Returns a one-line summary."""
    killed = power_cut(node)
    try:
        if docker:
            _settled(daemons.dockerd_pidfile(node))
            daemons.start_dockerd(node, wait_s=180)
    finally:  # whatever happened to dockerd, the node answers SSH again (as after a boot)
        daemons.start_sshd(node)
    units = enabled(node)
    if units:
        res = subprocess.run([*node.nsenter(), "/usr/local/sbin/systemctl", "--testbed-boot"],
                             env=boot_env(), capture_output=True, text=True, check=False,
                             timeout=60)
        if res.returncode != 0:
            raise TestbedError(f"{node.name}: booting its units failed: {res.stderr.strip()}")
    return (f"{node.name}: rebooted ({killed} process(es) killed; dockerd and sshd started "
            f"again; units started: {', '.join(units) or 'none'})")
