"""`dgxcluster model sync` throughput against a raw `ssh a 'cat f' | ssh b 'cat > f'`.

A synthetic 2 GiB model (4 safetensors shards + small files, HF cache layout) is built on
node1 of a 4-node testbed. Measured, alternating so both see the same machine state:
  - raw: `ssh node1 cat <blobs> | ssh node2 'cat > /tmp/raw'` (the same bytes, through
    this machine, encrypted twice), and the naive fan-out of that to 3 peers at once;
  - `dgxcluster model sync` to 1 peer and to 3 peers (node to node, every blob hashed by
    its receiver; the peers' copies are deleted before each run);
  - a no-op sync (everything already there and verified).
Prints medians and ratios; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from common import PY, median, testbed_down, testbed_up

from tests.hfcache import BUILD_SCRIPT, spec

HUB = "/root/.cache/huggingface/hub"
REPO = "bench/model-2g"
ENTRY = f"{HUB}/models--bench--model-2g"


def sub_inventory(inv: Path, n: int) -> Path:
    data = yaml.safe_load(inv.read_text())
    data["nodes"] = data["nodes"][:n]
    out = inv.with_name(f"{inv.stem}-{n}.yaml")
    out.write_text(yaml.safe_dump(data))
    return out


class Nodes:
    def __init__(self, inv: Path) -> None:
        data = yaml.safe_load(inv.read_text())
        self.hosts = {n["name"]: n["host"] for n in data["nodes"]}
        self.base = ["ssh", "-i", data["ssh"]["identity_file"], "-o", "BatchMode=yes",
                     "-o", f"UserKnownHostsFile={inv.with_suffix('.known_hosts')}",
                     "-o", "StrictHostKeyChecking=yes"]

    def ssh(self, node: str, *argv: str) -> list[str]:
        return [*self.base, f"root@{self.hosts[node]}", *argv]

    def run(self, node: str, script: str) -> str:
        return subprocess.run(self.ssh(node, script), check=True, capture_output=True,
                              text=True).stdout


def timed_shell(cmd: str) -> float:
    t0 = time.perf_counter()
    subprocess.run(["bash", "-o", "pipefail", "-c", cmd], check=True)
    return time.perf_counter() - t0


def sync(inv: Path) -> tuple[float, dict[str, object]]:
    t0 = time.perf_counter()
    proc = subprocess.run([PY, "-m", "dgxcluster", "-i", str(inv), "model", "sync", REPO,
                           "--json"], capture_output=True, text=True, check=False)
    dt = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"sync failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return dt, json.loads(proc.stdout)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--gib", type=float, default=2.0)
    a = ap.parse_args()
    name = "bmod"
    inv = testbed_up(name, 4)
    try:
        nodes = Nodes(inv)
        shard = int(a.gib * (1 << 30)) // 4
        files: dict[str, int | str] = {f"model-{i + 1:05d}-of-00004.safetensors": shard
                                       for i in range(4)}
        files.update({"config.json": '{"architectures": ["Bench"]}', "tokenizer.json": 2_000_000})
        nodes.run("node1", f"rm -rf {ENTRY}")
        subprocess.run(nodes.ssh("node1", "python3", "-c", _quoted(BUILD_SCRIPT), HUB,
                                 _quoted(spec(REPO, files))), check=True, capture_output=True)
        blobs = nodes.run("node1", f"ls {ENTRY}/blobs").split()
        total = int(nodes.run("node1", f"cd {ENTRY}/blobs && cat * | wc -c"))
        cat_src = " ".join(f"{ENTRY}/blobs/{b}" for b in blobs)
        src = " ".join(nodes.ssh("node1", "cat", cat_src))
        raw1 = f"{src} | " + " ".join(nodes.ssh("node2", "'cat > /tmp/raw'"))
        raw3 = " & ".join(
            f"{src} | " + " ".join(nodes.ssh(p, "'cat > /tmp/raw'")) for p in ("node2", "node3", "node4")
        ) + " & wait"
        inv2, inv4 = sub_inventory(inv, 2), sub_inventory(inv, 4)

        def clean_peers() -> None:
            for p in ("node2", "node3", "node4"):
                nodes.run(p, f"rm -rf {ENTRY} /tmp/raw ~/.local/state/dgxcluster/*/records/models")

        sync(inv2)  # warm: agents shipped, source hashed once (as after a first sync)
        t_raw1, t_raw3, t_s1, t_s3, t_noop = [], [], [], [], []
        for _ in range(a.runs):
            clean_peers()
            t_raw1.append(timed_shell(raw1))
            t_raw3.append(timed_shell(raw3))
            clean_peers()
            dt, rep = sync(inv2)
            t_s1.append(dt)
            assert rep["bytes_received"], rep
            clean_peers()
            dt, rep = sync(inv4)
            t_s3.append(dt)
            t_noop.append(sync(inv4)[0])
        clean_peers()
        gb = total / 1e9
        print(f"model sync benchmark: {total / (1 << 30):.2f} GiB model ({len(blobs)} blobs), "
              f"4-node testbed on one machine, {a.runs} alternating runs (median wall)")
        rows = [
            ("raw ssh cat | ssh cat, 1 peer", median(t_raw1), gb),
            ("raw ssh cat | ssh cat, 3 peers at once", median(t_raw3), 3 * gb),
            ("dgxcluster model sync, 1 peer", median(t_s1), gb),
            ("dgxcluster model sync, 3 peers", median(t_s3), 3 * gb),
        ]
        for label, secs, moved in rows:
            print(f"  {label:<42} {secs:7.2f} s  {moved / secs:6.3f} GB/s delivered")
        print(f"\n  throughput ratio sync/raw, 1 peer:  {median(t_raw1) / median(t_s1):5.2f}"
              "   (target >= 0.8)")
        print(f"  throughput ratio sync/raw, 3 peers: {median(t_raw3) / median(t_s3):5.2f}")
        print(f"  no-op sync (4 nodes, all verified):  {median(t_noop):5.2f} s "
              f"(runs: {', '.join(f'{t:.2f}' for t in t_noop)})")
    finally:
        for n in (2, 4):
            inv.with_name(f"{inv.stem}-{n}.yaml").unlink(missing_ok=True)
        testbed_down(name)


def _quoted(text: str) -> str:
    import shlex

    return shlex.quote(text)


if __name__ == "__main__":
    main()
