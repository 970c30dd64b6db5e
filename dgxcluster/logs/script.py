"""The one fixed script `logs` runs on each node, and the argv that runs it.

Everything a node contributes comes back on one SSH channel as one gzip stream written to
stdout, so nothing is ever written on the node: no temporary file, no remote archive.
Inside the stream, items are framed by header lines that start with a random boundary
(chosen per run, passed as $1), so item bodies may hold any bytes, tar archives included:

    \\n<B> file NAME\\n<body>          the item's output
    \\n<B> stderr NAME\\n<text>        what the command printed on stderr (if anything)
    \\n<B> end NAME RC MS\\n           its exit status and duration in milliseconds
    \\n<B> meta KEY VALUE\\n           facts about the run (node clock, since)
    \\n<B> done\\n                     the stream is complete

Values reach the script only as positional parameters (`shell()`), never spliced into it.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence

from dgxcluster.core.naming import LABEL_CLUSTER
from dgxcluster.remote.command import shell

#: Where Ray keeps the current session's logs inside every container.
RAY_LOGS = "/tmp/ray/session_latest/logs"
DMESG_LINES = 300

# $1 boundary  $2 cluster  $3 dgxcluster log dir on the node (may start with ~/)
# $4 since: seconds back from now, 0 for everything  $5 dmesg lines  $6 ray log dir
# $7... fabric interfaces (for ethtool)
COLLECT = r"""
B=$1 C=$2 L=$3 S=$4 N=$5 R=$6
shift 6
case $L in "~") L=$HOME ;; "~/"*) L=$HOME/${L#"~/"} ;; esac
now=$(date +%s)
E=0
[ "$S" -gt 0 ] && E=$((now - S))
ms() { date +%s%3N; }
hdr() { printf '\n%s %s\n' "$B" "$*"; }
# item NAME CMD...: stdout is the body, stderr is kept apart
item() {
  n=$1; shift
  hdr file "$n"; t0=$(ms)
  { err=$("$@" 2>&1 >&3); rc=$?; } 3>&1
  t1=$(ms)
  [ -z "$err" ] || { hdr stderr "$n"; printf '%s' "$err"; }
  hdr end "$n" "$rc" "$((t1 - t0))"
}
# merged NAME CMD...: stdout and stderr interleaved in the body (container logs)
merged() {
  n=$1; shift
  hdr file "$n"; t0=$(ms)
  "$@" 2>&1; rc=$?
  t1=$(ms)
  hdr end "$n" "$rc" "$((t1 - t0))"
}
dlogs() {
  if [ "$E" -gt 0 ]; then docker logs --timestamps --since "$E" "$1"
  else docker logs --timestamps "$1"; fi
}
logdir() {
  if [ ! -d "$L" ]; then echo "no directory $L (nothing started here yet?)" >&2; return 1; fi
  if [ "$E" -gt 0 ]; then tar -C "$L" --newer-mtime="@$E" -cf - .
  else tar -C "$L" -cf - .; fi
}
dmesg_tail() {
  d=$(dmesg -T 2>&1) || { printf '%s\n' "$d" >&2; return 1; }
  printf '%s\n' "$d" | tail -n "$N"
}
main() {
  hdr meta now "$now"
  hdr meta since "$E"
  names=$(docker ps -a --filter "label=$C" --format '{{.Names}}' 2>&1)
  if [ $? -ne 0 ]; then
    hdr file docker; hdr stderr docker; printf '%s' "$names"; hdr end docker 1 0
    names=
  fi
  for c in $names; do
    item "containers/$c/inspect.json" docker inspect "$c"
    merged "containers/$c/docker.log" dlogs "$c"
    item "containers/$c/ray-logs.tar" docker cp "$c:$R" -
  done
  item dgxcluster-logs.tar logdir
  item host/uname.txt uname -a
  item host/nvidia-smi-q.txt nvidia-smi -q
  item host/ibv_devinfo-v.txt ibv_devinfo -v
  item host/ip-d-addr.txt ip -d addr
  for i in "$@"; do item "host/ethtool-$i.txt" ethtool "$i"; done
  item host/df-h.txt df -h
  item host/free-m.txt free -m
  item host/dmesg-tail.txt dmesg_tail
  hdr done
}
if command -v gzip >/dev/null 2>&1; then main "$@" | gzip -c -1; else main "$@"; fi
"""


def new_boundary() -> str:
    """A marker no collected file will contain by chance (chosen fresh for every run)."""
    return "@@dgxc-" + secrets.token_hex(12)


def collect_argv(
    boundary: str,
    cluster: str,
    log_dir: str,
    since_s: int,
    interfaces: Sequence[str],
    dmesg_lines: int = DMESG_LINES,
) -> list[str]:
    """argv for one node's collection: the fixed script with every value as `$n`."""
    return shell(
        COLLECT,
        boundary,
        f"{LABEL_CLUSTER}={cluster}",
        log_dir,
        str(max(0, int(since_s))),
        str(dmesg_lines),
        RAY_LOGS,
        *interfaces,
    )
