"""Is a user-space OOM guard watching the node? earlyoom, systemd-oomd or nohang.

On a DGX Spark the CPU and the GPU share one memory: a process (a model, a test) that asks
for more does not fail, the box stalls in reclaim until sshd stops answering (NVIDIA
dgx-spark-playbooks issue #102); the kernel's own OOM killer acts too late. A guard that
kills the biggest process when available memory runs low keeps the node reachable. Each
guard is asked through systemd (`systemctl is-active --quiet UNIT`: exit 0 when active,
systemctl(1)), else looked for as a process (`pgrep -x NAME`, procps), for nodes without
systemd. The script ends with a marker line so that a cut-off answer is not read as "none".
"""

from __future__ import annotations

from dataclasses import dataclass

from dgxcluster.facts import ParseError, content_lines

COMMAND = "OOM guard probe (systemctl is-active / pgrep)"
GUARDS = ("earlyoom", "systemd-oomd", "nohang")
END = "end"
_SCRIPT = (
    'for u in "$@"; do '
    'if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet "$u.service" '
    '2>/dev/null; then echo "active $u"; '
    'elif pgrep -x "$u" >/dev/null 2>&1; then echo "running $u"; fi; '
    f'done; echo {END}'
)
ARGV = ["sh", "-c", _SCRIPT, "sh", *GUARDS]


@dataclass(frozen=True)
class Guard:
    name: str
    how: str  # "active" (a systemd unit) or "running" (a process)


def parse(text: str) -> list[Guard]:
    lines = [ln for ln in content_lines(text) if ln]
    if not lines or lines[-1] != END:
        raise ParseError(COMMAND, f"no closing {END!r} line", text)
    found: list[Guard] = []
    for ln in lines[:-1]:
        how, _, name = ln.partition(" ")
        if how not in ("active", "running") or name not in GUARDS:
            raise ParseError(COMMAND, f"unexpected line {ln!r}", text)
        found.append(Guard(name, how))
    return found
