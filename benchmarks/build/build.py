"""`dgxcluster build` on a 2-node docker testbed: no-op time, distribute throughput against a
raw `ssh A cat | ssh B cat` pipe of the same bytes, and `each` against `distribute`.

Prints figures and ratios; asserts nothing (speed is not a test). The machine is shared, so
every figure is the median of alternating runs.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import PY, REPO, median, testbed_down, testbed_up, timed

IMAGE = "dgxcluster/testbed"


def sh(inv: Path, node: str, script: str, check: bool = True) -> str:
    p = subprocess.run([PY, "-m", "dgxcluster", "-i", str(inv), "exec", "-n", node, "--json",
                        "--", "sh", "-c", script], capture_output=True, text=True, check=False)
    import json

    row = json.loads(p.stdout)[0] if p.stdout.strip() else {}
    if check and row.get("exit_code") != 0:
        sys.exit(f"{node}: {script!r} failed: {row or p.stderr}")
    return str(row.get("stdout", ""))


def build(inv: Path, *args: str) -> float:
    return timed([PY, "-m", "dgxcluster", "-i", str(inv), "build", *args])


def ssh_argv(inv: Path, host: str) -> list[str]:
    text = inv.read_text()
    key = next(ln.split()[-1] for ln in text.splitlines() if "identity_file:" in ln)
    kh = inv.with_suffix(".known_hosts")
    return ["ssh", "-i", key, "-o", f"UserKnownHostsFile={kh}", "-o", "StrictHostKeyChecking=yes",
            "-o", "BatchMode=yes", "-l", "root", host]


def piped(a: list[str], b: list[str]) -> float:
    """Wall time of `a | b`, run by the operator's machine (what people do by hand today)."""
    t0 = time.perf_counter()
    p1 = subprocess.Popen(a, stdout=subprocess.PIPE)
    p2 = subprocess.Popen(b, stdin=p1.stdout, stdout=subprocess.DEVNULL)
    assert p1.stdout is not None
    p1.stdout.close()
    rc2, rc1 = p2.wait(), p1.wait()
    if rc1 or rc2:
        sys.exit(f"pipe failed ({rc1}, {rc2}): {a} | {b}")
    return time.perf_counter() - t0


def relay_file(inv: Path, src: str, dst: str, path: str) -> float:
    """dgxcluster's node-to-node stream of a file into /dev/null (transport only), wall."""
    from dgxcluster.core.relay import relay
    from dgxcluster.core.session import Session
    from dgxcluster.inventory import load_inventory

    with Session.open(load_inventory(inv), command="bench") as s:
        s.cluster.run(["true"])  # connections open, as in a dgxcluster command
        t0 = time.perf_counter()
        res = relay(s, src, ["cat", path], {dst: ["sh", "-c", "cat >/dev/null"]})
        dt = time.perf_counter() - t0
    if not res.ok:
        sys.exit(f"relay failed: {res.targets}")
    return dt


def distribute_full(inv: Path, ref: str) -> float:
    """The whole image node1 -> node2 (`docker save | relay | docker load`), no layer trimming."""
    from dgxcluster.core.nodepaths import NodePaths
    from dgxcluster.core.session import Session
    from dgxcluster.image import probe
    from dgxcluster.image.distribute import send_image
    from dgxcluster.inventory import load_inventory

    inv_ = load_inventory(inv)
    with Session.open(inv_, command="bench") as s:
        homes = s.cluster.run(probe.argv(ref, ref, inv_.state_dir)).values
        paths = {n: NodePaths(probe.parse(r.stdout, ref, ref).home, inv_.state_dir, inv_.cluster)
                 for n, r in homes.items()}
        t0 = time.perf_counter()
        out = send_image(s, "node1", ref, ["node2"], paths=paths, timeout=1800, trim=False)
        dt = time.perf_counter() - t0
    if not out["node2"].ok:
        sys.exit(f"distribute failed: {out}")
    return dt


def drop_image(inv: Path, node: str) -> None:
    """Remove every dgxcluster/testbed tag from a node (the base image stays)."""
    sh(inv, node, f"docker image ls --format '{{{{.Repository}}}}:{{{{.Tag}}}}' {IMAGE} "
                  "| xargs -r docker rmi -f >/dev/null; docker image prune -f >/dev/null")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--cold", action="store_true",
                    help="also time each vs distribute from an empty build cache (minutes)")
    a = ap.parse_args()
    name = "bbld"
    wheels = REPO / "images" / "testbed" / "wheels"
    if not any(wheels.glob("ray-*.whl")):
        subprocess.run([str(REPO / "images" / "testbed" / "fetch-wheels")], check=True)
    inv = testbed_up(name, 2, docker=True)
    work = Path(f"/var/tmp/dgxc-bench-build-{os.getpid()}")
    try:
        hosts = [ln.split()[-1] for ln in inv.read_text().splitlines()
                 if ln.strip().startswith("host:")]
        print("build benchmark on a 2-node docker testbed (Docker 20.10, 2 shared cores)\n")
        t_first = build(inv, "--strategy", "distribute")
        print(f"first build, distribute (build on node1, ship 572 MB to node2): {t_first:6.1f} s")

        # 1. no-op
        noop = [build(inv) for _ in range(a.runs)]
        print(f"\nno-op build, 2 nodes up to date: median {median(noop):.2f} s "
              f"(min {min(noop):.2f}, max {max(noop):.2f}; target <= 1.5 s)")

        # 2. throughput: the same bytes as the image's `docker save`
        tag = next(ln.split(":")[-1] for ln in sh(inv, "node1", f"docker image ls --format "
                   f"'{{{{.Tag}}}}' {IMAGE}").split() if ln.startswith("ctx-"))
        ref = f"{IMAGE}:{tag}"
        size = int(sh(inv, "node1", f"docker save {ref} > /tmp/big && stat -c %s /tmp/big"))
        raw, rel, dist, old = [], [], [], []
        for _ in range(max(3, a.runs // 2 + 1)):
            raw.append(piped(ssh_argv(inv, hosts[0]) + ["cat /tmp/big"],
                             ssh_argv(inv, hosts[1]) + ["cat >/dev/null"]))
            rel.append(relay_file(inv, "node1", "node2", "/tmp/big"))
            drop_image(inv, "node2")
            old.append(piped(ssh_argv(inv, hosts[0]) + [f"docker save {ref}"],
                             ssh_argv(inv, hosts[1]) + ["docker load -q"]))
            drop_image(inv, "node2")
            dist.append(distribute_full(inv, ref))
        mb = size / 1e6
        r, t, d, o = median(raw), median(rel), median(dist), median(old)
        print(f"\nthroughput, {mb:.0f} MB (the image's docker save), node1 -> node2, median of {len(raw)}:")
        print(f"  raw ssh node1 'cat big' | ssh node2 'cat >/dev/null'   {r:6.2f} s  {mb / r:6.0f} MB/s")
        print(f"  dgxcluster relay, same file -> /dev/null (transport)  {t:6.2f} s  {mb / t:6.0f} MB/s"
              f"   ratio vs raw {r / t:4.2f} (target >= 0.8)")
        print(f"  ssh node1 docker save | ssh node2 docker load           {o:6.2f} s  {mb / o:6.0f} MB/s")
        print(f"  dgxcluster distribute, whole image (save|relay|load)  {d:6.2f} s  {mb / d:6.0f} MB/s"
              f"   ratio vs raw {r / d:4.2f}, vs ssh save|load {o / d:4.2f}")
        print("  (docker save/load themselves bound the last two: see the note in the report)")
        sh(inv, "node1", "rm -f /tmp/big")

        # 3. each vs distribute after a one-file change (warm caches), and trimmed distribute
        ctx = work / "ctx"
        src = REPO / "images" / "testbed"
        shutil.copytree(src, ctx, ignore=shutil.ignore_patterns("wheels"))
        shutil.copytree(src / "wheels", ctx / "wheels", copy_function=os.link)
        inv2 = work / "inv.yaml"
        inv2.write_text(inv.read_text().replace("context: ../images/testbed", f"context: {ctx}")
                        .replace(f"known_hosts: {inv.with_suffix('.known_hosts').name}",
                                 f"known_hosts: {inv.with_suffix('.known_hosts')}"))
        build(inv2, "--strategy", "each")  # both nodes hold the copy's context and cache
        te, td = [], []
        for i in range(a.runs):
            with open(ctx / "entrypoint.sh", "a") as fh:
                fh.write(f"# each {i}\n")
            te.append(build(inv2, "--strategy", "each"))
            with open(ctx / "entrypoint.sh", "a") as fh:
                fh.write(f"# distribute {i}\n")
            td.append(build(inv2, "--strategy", "distribute"))
        print(f"\neach vs distribute, testbed image after a one-file change (warm), median of {a.runs}:")
        print(f"  each        (send 1 file to 2 nodes, 2 cached builds)        {median(te):6.2f} s")
        print(f"  distribute  (1 cached build, ship only the new layers)       {median(td):6.2f} s"
              f"   each/distribute {median(te) / median(td):4.2f}")

        if a.cold:
            tc_e, tc_d = [], []
            for _ in range(2):
                for node in ("node1", "node2"):
                    drop_image(inv, node)
                    sh(inv, node, "docker builder prune -af >/dev/null")
                tc_e.append(build(inv, "--strategy", "each"))
                for node in ("node1", "node2"):
                    drop_image(inv, node)
                    sh(inv, node, "docker builder prune -af >/dev/null")
                tc_d.append(build(inv, "--strategy", "distribute"))
            print("\neach vs distribute, testbed image from an empty build cache (cold), median of 2:")
            print(f"  each        (2 full builds in parallel on the same 2 cores)  {median(tc_e):6.1f} s")
            print(f"  distribute  (1 full build, ship 403 MB of new layers)        {median(tc_d):6.1f} s"
                  f"   each/distribute {median(tc_e) / median(tc_d):4.2f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
        testbed_down(name)


if __name__ == "__main__":
    main()
