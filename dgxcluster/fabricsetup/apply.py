"""`fabric plan` (read-only) and `fabric apply`: write each changed node's netplan file,
`netplan apply`, check that every link of the changed nodes answers, roll back otherwise.

    probe (every node, read-only) -> refuse? (nothing written anywhere)
    -> write + netplan apply (changed nodes, in parallel)
    -> verify (own addresses present, don't-fragment pings over each link, until a deadline)
    -> rollback of every changed node (previous file or none, netplan apply, the previous
       live addresses and MTU of the managed interfaces) when a link does not answer

A second `apply` finds every node unchanged and does nothing. The previous file is kept on
the node as `40-cx7.yaml.dgxcluster-prev` (netplan reads only `*.yaml`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from dgxcluster.core import netplan
from dgxcluster.core.progress import NullProgress, Progress
from dgxcluster.core.session import Session
from dgxcluster.core.steps import Outcome, Status, failed
from dgxcluster.errors import DgxClusterError
from dgxcluster.fabricsetup import probe
from dgxcluster.fabricsetup.plan import NodePlan, plan_node
from dgxcluster.facts import ParseError, ipaddr
from dgxcluster.facts import ping as ping_fact
from dgxcluster.inventory import topology
from dgxcluster.inventory.schema import InventoryModel
from dgxcluster.remote.command import shell
from dgxcluster.remote.connection import Connection

STEP = "fabric"
PREV = ".dgxcluster-prev"
_PATH = 'PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"; export PATH; '
#: stdin is the new file; the previous one (if any) is kept beside it for the rollback.
WRITE = (_PATH + 'set -e; f="$1"; umask 077; rm -f "$f' + PREV + '"; '
         '[ ! -e "$f" ] || cp -p "$f" "$f' + PREV + '"; cat >"$f.tmp"; chmod 600 "$f.tmp"; '
         'mv "$f.tmp" "$f"; netplan apply')
#: $1 the file; then one `iface|mtu|addr,addr` per managed interface: its state before.
ROLLBACK = (_PATH + 'f="$1"; shift; '
            'if [ -e "$f' + PREV + '" ]; then mv "$f' + PREV + '" "$f"; else rm -f "$f"; fi; '
            'netplan apply; rc=$?; for s in "$@"; do i="${s%%|*}"; r="${s#*|}"; m="${r%%|*}"; '
            'a="${r#*|}"; ip -4 addr flush dev "$i"; [ -z "$m" ] || ip link set dev "$i" mtu "$m"; '
            'for x in $(echo "$a" | tr "," " "); do ip addr add "$x" dev "$i"; done; done; exit $rc')
VERIFY_TIMEOUT_S = 30.0


@dataclass
class FabricReport:
    plans: dict[str, NodePlan] = field(default_factory=dict)
    outcomes: list[Outcome] = field(default_factory=list)
    rolled_back: list[str] = field(default_factory=list)


def gather(session: Session, nodes: Sequence[str],
           progress: Progress | None = None) -> FabricReport:
    """Probe every node (read-only) and plan it; an unreachable node becomes an outcome."""
    prog = progress or NullProgress()
    inv = session.inventory

    def one(conn: Connection) -> NodePlan:
        prog.status(conn.node, "reading netplan and interfaces")
        res = conn.run(probe.argv(), timeout=60)
        try:
            st = probe.parse(res.stdout)
        except ParseError as exc:
            raise DgxClusterError(f"{exc} (exit {res.exit_code}: {res.stderr.strip()[:200]})") \
                from None
        return plan_node(inv, conn.node, st)

    got = session.cluster.map(one, list(nodes))
    report = FabricReport()
    for name in got:
        v = got[name]
        if isinstance(v, NodePlan):
            report.plans[name] = v
            prog.status(name, v.summary())
        else:
            report.outcomes.append(failed(name, STEP, v))
    return report


def plan(session: Session, nodes: Sequence[str], progress: Progress | None = None) -> FabricReport:
    """What apply would do, per node (`changed` reads "would ...", as build's dry run); a
    refused node FAILs (exit 1). Nothing is changed."""
    report = gather(session, nodes, progress)
    for name, p in report.plans.items():
        status = (Status.FAILED if p.refusals else
                  Status.CHANGED if p.changed else Status.UNCHANGED)
        report.outcomes.append(Outcome(name, STEP, status, p.summary(),
                                       data={"changed": p.changed, "diff": p.diff(),
                                             "live": p.live, "refusals": p.refusals}))
    return report


def apply(session: Session, nodes: Sequence[str], progress: Progress | None = None,
          verify_timeout_s: float = VERIFY_TIMEOUT_S) -> FabricReport:
    prog = progress or NullProgress()
    report = gather(session, nodes, prog)
    refused = {n: p for n, p in report.plans.items() if p.refusals}
    if refused or report.outcomes:
        why = ", ".join([*refused, *(o.node for o in report.outcomes)])
        for name, p in report.plans.items():
            report.outcomes.append(
                Outcome(name, STEP, Status.FAILED, p.summary()) if name in refused else
                Outcome(name, STEP, Status.SKIPPED, f"nothing was changed ({why} cannot be set up)"))
        return report
    changed = [n for n, p in report.plans.items() if p.changed]
    for name in report.plans:
        if name not in changed:
            report.outcomes.append(Outcome(name, STEP, Status.UNCHANGED, report.plans[name].summary()))
    if not changed:
        return report
    written = _write(session, report, changed, prog)
    bad = _verify(session, written, verify_timeout_s, prog) if written else {}
    failures = {n: e for n, e in written.items() if e} | bad
    if failures:
        _rollback(session, report, changed, failures, prog)
    else:
        for name in changed:
            links = len(topology.of(session.inventory).links_of(name))
            report.outcomes.append(Outcome(name, STEP, Status.CHANGED,
                                           f"wrote {netplan.PATH} and ran netplan apply; "
                                           f"{links} link(s) answer"))
    return report


def _write(session: Session, report: FabricReport, changed: list[str],
           prog: Progress) -> dict[str, str]:
    """Write and apply on every changed node; node -> '' (done) or why it failed."""

    def one(conn: Connection) -> str:
        p = report.plans[conn.node]
        prog.status(conn.node, f"writing {netplan.PATH}, netplan apply")
        res = conn.run([*p.state.sudo_argv, *shell(WRITE, netplan.PATH)],
                       stdin=p.wanted.encode(), timeout=120)
        return "" if res.ok else (f"netplan apply failed (exit {res.exit_code}): "
                                  + (res.stderr.strip() or res.stdout.strip())[-300:])

    got = session.cluster.map(one, changed)
    return {n: (v if isinstance(v, str) else str(v)) for n, v in
            ((n, got[n]) for n in got)}


def _check(conn: Connection, inv: InventoryModel, prog: Progress) -> list[str]:
    """What does not answer yet on this node: its own addresses, then each link's ping."""
    topo = topology.of(inv)
    res = conn.run(ipaddr.ARGV, timeout=30)
    problems = []
    try:
        ifaces = ipaddr.parse(res.stdout)
    except ParseError as exc:
        return [str(exc)]
    for port in topo.ports(conn.node):
        live = ifaces.get(port.interface)
        if port.address is not None and (live is None or not live.has(port.address)):
            problems.append(f"{port.label()} does not have {port.address}")
    links = topo.links_of(conn.node)
    if not links or problems:
        return problems
    out = conn.run(shell(_PATH + ping_fact.BATCH_SCRIPT, *ping_fact.batch_args(
        [(m.interface, str(q.address)) for m, q, _ in links], inv.fabric.mtu)), timeout=30)
    blocks = ping_fact.split_batch(out.stdout, len(links))
    for i, (mine, peer, _) in enumerate(links):
        try:
            ok = ping_fact.parse(blocks.get(i, "")).ok
        except ParseError:
            ok = False
        if not ok:
            problems.append(f"{mine.label()} -> {peer.label()} {peer.address} does not answer")
    prog.status(conn.node, "verifying: " + ("; ".join(problems) or "all links answer"))
    return problems


def _verify(session: Session, written: dict[str, str], timeout_s: float,
            prog: Progress) -> dict[str, str]:
    """Retry until every written node's links answer or the deadline passes."""
    inv = session.inventory
    nodes = [n for n, e in written.items() if not e]
    deadline = time.monotonic() + timeout_s
    last: dict[str, str] = {}
    while nodes:
        got = session.cluster.map(lambda conn: _check(conn, inv, prog), nodes)
        last = {}
        for name in got:
            v = got[name]
            if isinstance(v, BaseException):
                last[name] = str(v)
            elif v:
                last[name] = "; ".join(v)
        if not last or time.monotonic() >= deadline:
            return last
        time.sleep(1.0)
    return last


def _previous(p: NodePlan) -> list[str]:
    """The managed interfaces' live state before apply, as ROLLBACK takes it."""
    out = []
    for name in p.interfaces:
        live = p.state.ifaces.get(name)
        if live is not None:
            out.append(f"{name}|{live.mtu or ''}|{','.join(str(a) for a in live.ipv4)}")
    return out


def _rollback(session: Session, report: FabricReport, changed: list[str],
              failures: dict[str, str], prog: Progress) -> None:
    why = "; ".join(f"{n}: {e}" for n, e in failures.items())

    def one(conn: Connection) -> str:
        p = report.plans[conn.node]
        prog.status(conn.node, "rolling back")
        res = conn.run([*p.state.sudo_argv, *shell(ROLLBACK, netplan.PATH, *_previous(p))],
                       timeout=120)
        return "" if res.ok else (res.stderr.strip() or res.stdout.strip())[-300:]

    got = session.cluster.map(one, changed)
    for name in changed:
        v = got[name]
        if isinstance(v, BaseException) or v:
            report.outcomes.append(failed(name, STEP, f"could not roll back ({v}) after: {why}"))
        else:
            report.rolled_back.append(name)
            report.outcomes.append(Outcome(name, STEP, Status.FAILED,
                                           f"rolled back (previous {netplan.PATH} and live "
                                           f"addresses restored): {why}"))
