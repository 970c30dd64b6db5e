"""`verify-ib --bandwidth`: measure the fabric inside the cluster's image.

1. The image `start` runs (`core.imageid.expected`) must be on every node; its tools decide
   what runs.
2. `ib_write_bw` per link: on a switch per rail between neighbouring nodes (a ring; one pair
   for two nodes), on a ring or mesh over each cable twin, each end with its own RDMA device:
   about 93-98 Gb/s per twin when healthy.
3. NCCL all_gather/all_reduce across the serving nodes (`inventory.placement`, head first:
   N ranks) with NCCL_DEBUG=INFO, through the torch probe
   in dgxcluster's node-side bundle (`nodeside/nccl_probe.py`; the bundle, shipped by
   `core.ship`, is mounted into the containers and torchrun runs `nodeside.pyz nccl_probe`
   on every node at once).
   nccl-tests spans nodes only through MPI between the containers, which dgxcluster does not
   set up, so its binaries in the image are reported but not used. The probe prints nccl-tests'
   table; busbw (recomputed here for N ranks from size and time, `verify.busbw`) and the
   transport NCCL chose (parsed from its log) decide PASS/FAIL.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from dgxcluster.core import imageid, naming, ship
from dgxcluster.core.nodepaths import NodePaths
from dgxcluster.core.progress import NullProgress, Progress
from dgxcluster.core.session import Session
from dgxcluster.core.units import human_bytes
from dgxcluster.errors import DgxClusterError
from dgxcluster.facts import ParseError, ib_write_bw, meminfo, nccl_libs, nccl_log, nccl_tests
from dgxcluster.inventory import placement, topology
from dgxcluster.inventory.schema import InventoryModel
from dgxcluster.inventory.topology import Port
from dgxcluster.remote.connection import Connection
from dgxcluster.remote.result import Result
from dgxcluster.verify import busbw, containers, nccl_library
from dgxcluster.verify.results import CLUSTER, CheckResult, Checks, Level

#: Where the node-side bundle is mounted in the probe's containers.
PROBE_IN_CONTAINER = "/opt/dgxcluster/nodeside.pyz"
#: Appended to the tools script: which libnccl torch loads, by the bundle's probe ($1).
LIBS_SCRIPT = '; python3 "$1" nccl_libs 2>&1 || true'
PROBE_PORT = 29511
IB_PORT = 18515
IB_SECONDS = 5
#: nccl-tests' -b/-e/-f: sizes from 64 MiB up to at most 1 GiB, x4 each step
PROBE_MIN = 64 << 20
PROBE_MAX = 1 << 30
PROBE_STEP = 4
PROBE_ITERS = ["-w", "3", "-n", "10"]
#: What the probe holds besides its buffers (torch, the CUDA context, NCCL's own buffers),
#: and the share of a node's available memory it may take in all: on a Spark the GPU's
#: memory is the node's, and a probe that over-asks would freeze it, not fail.
PROBE_OVERHEAD = 2 << 30
PROBE_SHARE = 0.25
NCCL_TIMEOUT_S = 900.0
FIX_IMAGE = "build the image first: dgxcluster build"
FIX_SOCKETS = ("give the containers /dev/infiniband, IPC_LOCK and memlock=-1 (container.*), and let "
               "NCCL_IB_HCA name both twins; check `verify-ib` without --bandwidth first")


@dataclass
class Bench:
    """What the image offers, per node."""

    image: str = ""
    image_ids: dict[str, str] = field(default_factory=dict)
    tools: set[str] = field(default_factory=set)
    tools_output: str = ""  # also carries the NCCL-library probe's report
    bundles: dict[str, str] = field(default_factory=dict)  # node -> its node-side bundle


def rank_nodes(inv: InventoryModel, reachable: list[str]) -> list[str]:
    """The nodes the NCCL probe runs on, rank 0 first: the serving nodes (placement) that
    answered, else every reachable node with the head first."""
    if placement.problem(inv) is None:
        serving = [n for n in placement.place(inv).nodes if n in reachable]
        if len(serving) >= 2:
            return serving
    head = inv.head_name
    return ([head] if head in reachable else []) + [n for n in reachable if n != head]


def floor_for(inv: InventoryModel, min_busbw: float | None) -> float:
    """--min-busbw, else fabric.min_busbw_gbs, else the topology's default floor."""
    if min_busbw is not None:
        return min_busbw
    if inv.fabric.min_busbw_gbs is not None:
        return inv.fabric.min_busbw_gbs
    return busbw.default_floor(topology.of(inv).point_to_point)


def run_bandwidth(session: Session, reachable: list[str], min_busbw: float | None,
                  progress: Progress | None = None) -> list[CheckResult]:
    """Measure; `reachable` are the nodes that answered. Never raises for a node."""
    prog = progress or NullProgress()
    inv = session.inventory
    c = Checks(CLUSTER)
    nodes = rank_nodes(inv, reachable)
    bench = _preflight(session, nodes, c, prog)
    if bench is None:
        return c.results
    if len(nodes) < 2:
        c.warn("bandwidth", f"only {', '.join(nodes)} selected: bandwidth needs two nodes",
               "run without --node, or name at least two nodes")
        return c.results
    results = list(c.results)
    if "ib_write_bw" in bench.tools:
        results += _ib_write_bw(session, nodes, bench.image, prog)
    else:
        results.append(CheckResult(CLUSTER, "ib-write-bw", Level.WARN,
                                   f"ib_write_bw is not in {bench.image}",
                                   "add perftest to the image to measure each rail"))
    if "torch" not in bench.tools:
        results.append(CheckResult(CLUSTER, "nccl-bandwidth", Level.FAIL,
                                   f"{bench.image} has no torch.distributed: cannot "
                                   "run the NCCL probe", "use a vLLM image (it carries torch)"))
        return results
    results += _nccl_library(bench, bench.image, inv)
    results += _nccl(session, nodes, floor_for(inv, min_busbw), bench, prog)
    return results


def _nccl_library(bench: Bench, image: str, inv: InventoryModel) -> list[CheckResult]:
    try:
        libs = nccl_libs.parse(bench.tools_output)
    except ParseError as exc:
        return [CheckResult(CLUSTER, nccl_library.CHECK, Level.WARN, str(exc),
                            "run the image with python3 and look at its libnccl")]
    return nccl_library.judge(libs, image) + nccl_library.subnet_routing(
        libs, image, topology.of(inv).point_to_point)


def _preflight(session: Session, nodes: list[str], c: Checks, prog: Progress) -> Bench | None:
    inv = session.inventory
    try:
        ref = imageid.expected(inv).ref
    except DgxClusterError as exc:
        c.fail("bandwidth", f"cannot tell which image to measure in: {exc}",
               "point image.context at the build context `dgxcluster build` used")
        return None
    res = session.cluster.run(["docker", "image", "inspect", "--format", "{{.Id}}", ref], nodes,
                              timeout=60)
    bench = Bench(ref)
    missing = []
    for name in res:
        v = res[name]
        if isinstance(v, BaseException):
            missing.append(f"{name}: {v}")
        elif v.exit_code == 127:
            missing.append(f"{name}: docker is not installed")
        elif not v.ok:
            why = (v.stderr.strip().splitlines() or ["not found"])[-1]
            missing.append(f"{name}: {ref} not found ({why})")
        else:
            bench.image_ids[name] = v.stdout.strip()
    if missing:
        c.fail("bandwidth", "cannot measure inside the image: " + "; ".join(missing), FIX_IMAGE)
        return None
    if len(set(bench.image_ids.values())) > 1:
        c.warn("image-ids", "nodes hold different images under " + ref + ": " + ", ".join(
            f"{n} {i[:19]}" for n, i in bench.image_ids.items()), FIX_IMAGE)
    prog.message(f"bandwidth: {ref} on {len(nodes)} node(s); checking its tools")
    session.cluster.run(containers.remove(*containers.all_names(inv)), nodes, timeout=60)
    head = nodes[0]
    try:
        bench.bundles = _put_probe(session, nodes)
    except (DgxClusterError, OSError) as exc:
        c.fail("bandwidth", f"could not copy dgxcluster's node-side probes: {exc}",
               "see the node's error")
        return None
    out = session.cluster.conn(head).run(
        containers.run_argv(inv, head, ref, "tools", "sh",
                            ["-c", containers.TOOLS_SCRIPT + LIBS_SCRIPT, "sh", PROBE_IN_CONTAINER],
                            volumes=[f"{bench.bundles[head]}:{PROBE_IN_CONTAINER}:ro"]),
        timeout=300)
    bench.tools = {ln.split()[1] for ln in out.stdout.splitlines() if ln.startswith("have ")}
    bench.tools_output = out.stdout
    if not out.ok:
        c.fail("bandwidth", f"the image did not start on {head}: "
               + (out.stderr.strip().splitlines() or ["?"])[-1], FIX_IMAGE)
        return None
    return bench


def _pair_run(session: Session, jobs: dict[str, list[str]], timeout: float) -> dict[str, Result | str]:
    """Run one command per node at the same time; a per-node error becomes its text."""

    def one(conn: Connection) -> Result:
        return conn.run(jobs[conn.node], timeout=timeout)

    got = session.cluster.map(one, list(jobs))
    out: dict[str, Result | str] = {}
    for name in got:
        v = got[name]
        out[name] = v if isinstance(v, Result) else str(v)
    return out


def ib_pairs(inv: InventoryModel, nodes: list[str]) -> list[tuple[Port, Port]]:
    """(client, server) ports to measure: each cable twin of a ring or mesh once; on a
    switch, per rail, each node to the next (one pair for two nodes)."""
    topo = topology.of(inv)
    if topo.point_to_point:
        return [(a, b) for seg in topo.segments for a, b in seg.pairs()
                if a.node in nodes and b.node in nodes]
    out = []
    ring = [(nodes[i], nodes[(i + 1) % len(nodes)]) for i in range(len(nodes))]
    for a, b in ring[:1] if len(nodes) == 2 else ring:
        for seg in topo.segments:
            pa = next((p for p in seg.ports if p.node == a), None)
            pb = next((p for p in seg.ports if p.node == b), None)
            if pa is not None and pb is not None and pa.rdma_device and pb.rdma_device:
                out.append((pa, pb))
    return out


_RETRY = 'i=0; while [ $i -lt 30 ]; do "$@" && exit 0; i=$((i+1)); sleep 0.5; done; exit 1'


def _ib_write_bw(session: Session, nodes: list[str], image: str,
                 prog: Progress) -> list[CheckResult]:
    inv = session.inventory
    floor = inv.fabric.min_ib_write_gbits
    out: list[CheckResult] = []
    for k, (pa, pb) in enumerate(ib_pairs(inv, nodes)):
        a, b = pa.node, pb.node
        c = Checks(f"{a}->{b}")
        check = f"ib-write-bw {pa.rdma_device}"
        prog.status(a, f"ib_write_bw {pa.rdma_device} -> {b} {pb.rdma_device}")
        gid = inv.fabric.nccl_ib_gid_index
        port = IB_PORT + k % 64
        server = ib_write_bw.argv(pb.rdma_device or "", port=port, gid_index=gid,
                                  duration_s=IB_SECONDS)
        client = ib_write_bw.argv(pa.rdma_device or "", port=port, gid_index=gid,
                                  duration_s=IB_SECONDS, server_ip=str(pb.address))
        sname, cname = (naming.verify_container(inv.cluster, f"ibw-{x}")
                        for x in ("server", "client"))
        jobs = {
            b: containers.run_argv(inv, b, image, "ibw-server", server[0], server[1:]),
            a: containers.run_argv(inv, a, image, "ibw-client", "sh",
                                   ["-c", _RETRY, "sh", *client]),
        }
        got = _pair_run(session, jobs, timeout=IB_SECONDS * 4 + 60)
        session.cluster.run(containers.remove(sname), [b], timeout=60)
        session.cluster.run(containers.remove(cname), [a], timeout=60)
        res = got[a]
        if isinstance(res, str):
            c.fail(check, f"could not run ib_write_bw on {a}: {res}", "see the node's error")
            out += c.results
            continue
        try:
            bw = ib_write_bw.parse(res.stdout + "\n" + res.stderr)
        except ParseError as exc:
            c.fail(check, f"{exc}", "check the link (verify-ib without --bandwidth) and that "
                   "the image's ib_write_bw sees /dev/infiniband")
            out += c.results
            continue
        gbits = bw.average_gbits or 0.0
        text = (f"{gbits:.2f} Gb/s over {pa.rdma_device} to {b} {pb.rdma_device} {pb.address} "
                f"(floor {floor:g}; mtu {bw.info.get('Mtu', '?')}, link {bw.link_type or '?'})")
        if gbits < floor:
            c.fail(check, text, "check link speed, MTU and cabling of this link on both nodes")
        else:
            c.ok(check, text)
        out += c.results
    return out


def _put_probe(session: Session, nodes: list[str]) -> dict[str, str]:
    """The node-side bundle (which holds the probe) on every node: its path per node."""
    inv = session.inventory

    def put(conn: Connection) -> str:
        return ship.ensure(conn, NodePaths.resolve(conn, inv.state_dir, inv.cluster))

    got = session.cluster.map(put, nodes)
    got.raise_for_failures("copy the NCCL probe")
    return dict(got.values)


def probe_max_bytes(available: int | None) -> int | None:
    """The largest size the probe may reach on a node with `available` bytes available
    (None: unknown, the full range): its peak is about twice the size (all_gather's output,
    its input and the checks) plus `PROBE_OVERHEAD`, within `PROBE_SHARE` of what is
    available. None when even the smallest size would not fit."""
    if available is None:
        return PROBE_MAX
    budget = available * PROBE_SHARE - PROBE_OVERHEAD
    size = PROBE_MAX
    while size >= PROBE_MIN:
        if 2 * size <= budget:
            return size
        size //= PROBE_STEP
    return None


def _sized(session: Session, nodes: list[str]) -> tuple[int | None, str]:
    """(max bytes, why) from the node with the least memory available now."""
    got = session.cluster.run(meminfo.ARGV, nodes, timeout=60)
    least: tuple[int, str] | None = None
    for node in got:
        v = got[node]
        try:
            m = meminfo.parse(v.stdout) if not isinstance(v, BaseException) and v.ok else None
        except ParseError:
            m = None
        if m is not None and m.available_bytes is not None and (
                least is None or m.available_bytes < least[0]):
            least = (m.available_bytes, node)
    if least is None:
        return PROBE_MAX, "available memory unknown"
    return probe_max_bytes(least[0]), f"{human_bytes(least[0], binary=True)} available on {least[1]}"


def _nccl(session: Session, nodes: list[str], min_busbw: float, bench: Bench,
          prog: Progress) -> list[CheckResult]:
    inv = session.inventory
    c = Checks(CLUSTER)
    max_bytes, why = _sized(session, nodes)
    if max_bytes is None:
        c.fail("nccl-bandwidth", f"not measured: {why} is too little for the probe "
               f"({human_bytes(2 * PROBE_MIN + PROBE_OVERHEAD, binary=True)} at its smallest, "
               f"within {PROBE_SHARE:g} of what is available)",
               "free memory on the node (stop the cluster first: dgxcluster stop) and run again")
        return c.results
    probe_args = ["-b", _size_arg(PROBE_MIN), "-e", _size_arg(max_bytes), "-f", str(PROBE_STEP),
                  *PROBE_ITERS]
    paths = bench.bundles
    head_ip = str(inv.node(nodes[0]).fabric_ip)
    name = naming.verify_container(inv.cluster, "nccl")
    jobs = {}
    for rank, node in enumerate(nodes):
        args = ["-m", "torch.distributed.run", "--nnodes", str(len(nodes)), "--node_rank", str(rank),
                "--nproc_per_node", "1", "--master_addr", head_ip, "--master_port", str(PROBE_PORT),
                PROBE_IN_CONTAINER, "nccl_probe", *probe_args]
        jobs[node] = containers.run_argv(
            inv, node, bench.image, "nccl", "python3", args,
            extra_env={"NCCL_DEBUG": "INFO", "NCCL_DEBUG_SUBSYS": "INIT,NET,ENV",
                       "PYTHONUNBUFFERED": "1"},
            volumes=[f"{paths[node]}:{PROBE_IN_CONTAINER}:ro"])
    if bench.tools & {"all_gather_perf", "all_reduce_perf"}:
        prog.message("bandwidth: nccl-tests is in the image but needs MPI across containers; "
                     "using dgxcluster's torch probe")
    prog.message(f"bandwidth: NCCL all_reduce/all_gather across {len(nodes)} nodes, up to "
                 f"{human_bytes(max_bytes, binary=True)} ({why}; 1-3 min)")
    for n in nodes:
        prog.status(n, "NCCL probe running")
    got = _pair_run(session, jobs, timeout=NCCL_TIMEOUT_S)
    session.cluster.run(containers.remove(name), nodes, timeout=60)
    errors = {n: v for n, v in got.items() if isinstance(v, str)}
    texts = {n: v.stdout + "\n" + v.stderr for n, v in got.items() if isinstance(v, Result)}
    rails = len(topology.of(inv).rdma_devices(nodes[0]))
    return c.results + judge_nccl(texts.get(nodes[0], ""), "\n".join(texts.values()), errors,
                                  min_busbw, rails, nranks=len(nodes))


def _measured(op: str, row: nccl_tests.Row, nranks: int) -> tuple[float, float, float | None]:
    """(busbw, algbw, printed busbw) of the row's faster placement, busbw recomputed for
    `nranks` ranks from its size and time as nccl-tests defines it."""
    timed = [m for m in (row.oop, row.ip) if m is not None and m.time_us]
    if not timed:
        best = row.best_busbw or 0.0
        return best, 0.0, best
    m = min(timed, key=lambda x: x.time_us or 0.0)
    t = m.time_us or 1.0
    return busbw.busbw(op, row.size, t, nranks), busbw.algbw(row.size, t), m.busbw


def _size_arg(n: int) -> str:
    """nccl-tests' size syntax (`64M`, `1G`)."""
    return f"{n >> 30}G" if n % (1 << 30) == 0 else f"{n >> 20}M"


def judge_nccl(head_output: str, all_output: str, errors: dict[str, str], min_busbw: float,
               n_rails: int, nranks: int = 2) -> list[CheckResult]:
    """PASS/FAIL per collective from the probe's table and NCCL's log. Pure."""
    c = Checks(CLUSTER)
    try:
        tables = {t.op: t for t in nccl_tests.parse(head_output)}
    except ParseError as exc:
        tail = " | ".join(ln.strip() for ln in all_output.strip().splitlines()[-3:])
        errs = "; ".join(f"{n}: {e}" for n, e in errors.items())
        c.fail("nccl-bandwidth", f"{exc}{'; ' + errs if errs else ''}; last output: {tail}",
               "run again with -v; check that every node reaches the head's fabric_ip "
               f"(port {PROBE_PORT}) and that the containers see the GPU")
        return c.results
    try:
        log: nccl_log.NcclLog | None = nccl_log.parse(all_output)
    except ParseError:
        log = None
    transport = log.transport if log else None
    for op in ("all_gather", "all_reduce"):
        t = tables.get(op)
        check = f"nccl-{op}"
        if t is None or t.busbw_at_largest is None or t.largest is None:
            c.fail(check, f"no {op} result in the probe's output", "run again with -v")
            continue
        size = t.largest.size
        bw, alg, printed = _measured(op, t.largest, nranks)
        how = transport.detail if transport else "transport unknown (no NCCL INFO lines)"
        avg = f", avg {t.avg_busbw:g}" if t.avg_busbw is not None else ""
        odd = (f"; the probe printed busbw {printed:.2f}, not the {nranks}-rank value"
               if printed is not None and abs(printed - bw) > 0.02 * max(bw, 0.01) else "")
        text = (f"busbw {bw:.2f} GB/s at {size / 2**30:g} GiB{avg} (floor {min_busbw:g}; algbw "
                f"{alg:.2f} over {nranks} ranks, floor {busbw.algbw_floor(op, min_busbw, nranks):.2f})"
                f"{odd}; {how}{_log_evidence(log)}")
        rails = _rails_used(log, n_rails) if log and transport and transport.rdma else None
        if transport is not None and transport.sockets:
            c.fail(check, f"NCCL used TCP sockets: {text}", FIX_SOCKETS)
        elif t.wrong:
            c.fail(check, f"{t.wrong} wrong values: {text}", "the collective returned bad data")
        elif bw < min_busbw:
            c.fail(check, text, "check link speed, MTU, both twins in NCCL_IB_HCA, and that "
                   "NCCL uses NET/IB (verify-ib without --bandwidth)")
        elif rails:
            c.warn(check, f"NCCL used only {rails} of {n_rails} rails: {text}",
                   "list both twins in NCCL_IB_HCA")
        else:
            c.ok(check, text)
    return c.results


def _log_evidence(log: nccl_log.NcclLog | None) -> str:
    """The devices NCCL opened and what it said about GPU Direct RDMA."""
    if log is None:
        return ""
    devs = f" over {', '.join(log.ib_devices)}" if log.ib_devices else ""
    if log.ring_gdr is False:
        gdr = "; GPU Direct RDMA off ('use ring PXN ... GDR 0', expected on GB10)"
    elif log.gdr_disabled:
        gdr = "; GPU Direct RDMA disabled (expected on GB10)"
    else:
        gdr = "; GPU Direct RDMA on" if log.gdr_used else ""
    return devs + gdr


def _rails_used(log: nccl_log.NcclLog, n_rails: int) -> str | None:
    """Which rails NCCL used when that is fewer than `n_rails`, else None.

    `NET/IB : Using [0]dev [1]dev` lists the devices NCCL opened; the channel lines'
    `NET/<net>/<dev>` say which of them carry data (both count: one twin caps ~12 GB/s)."""
    if 0 < len(log.ib_devices) < n_rails:
        return ", ".join(log.ib_devices)
    used = log.net_devices
    if 0 < len(used) < n_rails:
        names = [log.ib_devices[i] if i < len(log.ib_devices) else f"device {i}" for i in used]
        return ", ".join(names) + " (channel lines)"
    return None
