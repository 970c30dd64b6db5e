"""Faults injected into the 2-node docker testbed while dgxcluster works: real sshd, dockerd
and Ray; the vLLM stand-in (loading in 0 s here) is the only double.

After each fault: the report names the node and what happened, the exit code is the
documented one, `tests.leaks` finds nothing left on any node (containers, processes,
env-files, temporary files, a held lock), and a following `start` or `build` works.
Some faults are proven elsewhere already and only referenced here:
- a worker cut off *before* its container starts, the stand-in killed while loading,
  a held lock: tests/e2e/test_start_stop.py (with the leak check added there too);
- dockerd stopped during a build, a node unreachable during a build: tests/e2e/test_build.py.

Tests run in file order and share one cluster: a test that needs it running calls
`start` (an "already running" no-op when the previous test left it up). To keep the suite
inside CI's budget (a start costs ~15-25 s here), a test whose fault ends with the cluster
stopped leaves its "following start works" to the next test's first start.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from dgxcluster.core.buildcontext import scan
from tests import hfcache
from tests.clirun import Background, CmdlineSampler
from tests.conftest import BUILD_ARGS, REPO, Testbed, flat
from tests.leaks import LOCK_HELD, STATE, assert_no_leaks, node_leaks

pytestmark = [pytest.mark.e2e, pytest.mark.docker]

TOKEN = f"hf_fault{uuid.uuid4().hex}"
ENV = {"HF_TOKEN": TOKEN,
       "DGXCLUSTER_CONTAINER__ENV": json.dumps({"DGXCLUSTER_STANDIN_LOAD_S": "0"})}
CONNECT_TIMEOUT = 4.0
TIMINGS: dict[str, list[float]] = {}


def _timed(name: str, seconds: float) -> None:
    TIMINGS.setdefault(name, []).append(round(seconds, 2))


@pytest.fixture(scope="module")
def tb(testbed_docker: Testbed) -> Iterator[Testbed]:
    testbed_docker.ensure_image()
    testbed_docker.ensure_model()
    testbed_docker.dgx("stop", env=ENV)
    yield testbed_docker
    testbed_docker.dgx("stop", env=ENV)
    out = os.environ.get("DGXC_FAULT_TIMINGS")
    if out:
        with open(out, "a") as fh:
            fh.write(json.dumps(TIMINGS) + "\n")


def dgx(tb: Testbed, *args: str, env: dict[str, str] | None = None, timeout: float = 600) -> Any:
    t = time.monotonic()
    p = tb.dgx(*args, env={**ENV, **(env or {})}, timeout=timeout)
    p.elapsed = time.monotonic() - t  # type: ignore[attr-defined]
    return p


def start_ok(tb: Testbed, *before: str, env: dict[str, str] | None = None) -> Any:
    """`dgxcluster [BEFORE...] start` (BEFORE: global options such as -v)."""
    r = dgx(tb, *before, "start", env=env)
    assert r.returncode == 0, r.stderr[-4000:]
    assert "ready in" in r.stdout or "already running" in r.stdout, r.stdout
    return r


def stop_ok(tb: Testbed) -> Any:
    r = dgx(tb, "stop")
    assert r.returncode == 0, r.stderr[-4000:]
    return r


def background(tb: Testbed, *args: str, env: dict[str, str] | None = None) -> Background:
    return Background("-i", str(tb.inventory), *args, env={**ENV, **(env or {})})


def containers(tb: Testbed, node: str) -> list[str]:
    out = tb.node_exec(node, "docker", "ps", "-a", "--filter", "label=dgxcluster.cluster",
                       "--format", "{{.Names}} {{.State}}").stdout
    return sorted(out.split("\n")[:-1])


# -- a node that hangs ----------------------------------------------------------------------

TINY = "dgxc/fault-tiny"
HUNG_COMMANDS = [
    ("exec", "--", "true"),
    ("build",),
    ("build", "--dry-run"),
    ("verify-ib",),
    ("start",),
    ("start", "--dry-run"),
    ("stop",),
    ("model", "ls"),
    ("model", "sync", TINY),
]


def test_hung_node_every_command_gives_up_within_its_timeout_naming_it(tb: Testbed) -> None:
    """node2's port 22 accepts TCP and never answers: each command returns within 3x the
    connect timeout (it does not wait forever), exits 3 and names node2."""
    hub = "/root/.cache/huggingface/hub"
    tb.node_exec("node1", *hfcache.build_argv(hub, hfcache.spec(TINY, {"config.json": "{}"})))
    tb.tb("hang", "node2")
    results = {}
    try:
        for cmd in HUNG_COMMANDS:
            r = dgx(tb, *cmd, env={"DGXCLUSTER_SSH__CONNECT_TIMEOUT": str(CONNECT_TIMEOUT)},
                    timeout=120)
            results[" ".join(cmd)] = r
            _timed("hung " + " ".join(cmd), r.elapsed)
    finally:
        tb.tb("unhang", "node2")
        for node in tb.nodes:
            tb.node_exec(node, "rm", "-rf", f"{hub}/models--dgxc--fault-tiny")
    for name, r in results.items():
        text = flat(r.stdout + r.stderr)
        assert r.returncode == 3, (name, text)
        assert r.elapsed < 3 * CONNECT_TIMEOUT, (name, r.elapsed)
        assert "node2" in text and ("no SSH banner" in text or "unreachable" in text), (name, text)
        assert "Traceback" not in text
    assert_no_leaks(tb)


# -- start: a node unreachable, the head killed, dockerd down --------------------------------

def test_node_unreachable_before_start_changes_nothing_then_start_works(tb: Testbed) -> None:
    stop_ok(tb)
    tb.tb("sshd", "node2", "stop")
    try:
        r = dgx(tb, "start")
    finally:
        tb.tb("sshd", "node2", "start")
    assert r.returncode == 3, r.stderr
    assert "start failed at step 'preflight'" in r.stderr
    assert re.search(r"node2: unreachable: .*Connection refused", r.stderr)
    assert "nothing was changed" in r.stderr
    assert_no_leaks(tb)
    start_ok(tb)  # the cluster is left running for the next test


def test_head_container_killed_while_serving_then_stop_cleans_up(tb: Testbed) -> None:
    start_ok(tb)
    head = f"dgxc-{tb.name}-head"
    tb.node_exec("node1", "docker", "kill", head)
    assert containers(tb, "node1") == [f"{head} exited"]
    status = dgx(tb, "status")
    assert status.returncode == 0, status.stderr
    shown = flat(status.stdout)
    assert "head exited (137)" in shown and "worker running" in shown, shown
    assert "not serving" in shown, shown
    r = stop_ok(tb)
    text = flat(r.stdout)
    assert f"removed {head}" in text and f"removed dgxc-{tb.name}-worker" in text
    assert "deleted 1 env-file(s)" in text
    assert_no_leaks(tb)
    # the following start is the next test's first one


def test_a_flag_vllm_refuses_let_through_fails_start_fast_with_vllms_message(tb: Testbed) -> None:
    """A flag vLLM 0.20.1 removed, passed with --skip-flag-check: the stand-in (vLLM's parser,
    rebuilt from the same snapshot) exits 2 as `vllm serve` does, and start fails at once at
    vllm-ready with that log, not after its ready timeout; everything is rolled back."""
    removed = {"DGXCLUSTER_SERVE__EXTRA_ARGS": json.dumps(["--swap-space", "4"])}
    refused = dgx(tb, "start", env=removed)
    assert refused.returncode == 2 and "has no option --swap-space" in refused.stderr
    r = dgx(tb, "start", "--skip-flag-check", env=removed)
    _timed("flag let through: start fails", r.elapsed)
    assert r.returncode == 1, r.stderr
    assert ("warning: serve.extra_args: --swap-space: vLLM 0.20.1's `vllm serve` has no option "
            "--swap-space (passed unchecked: --skip-flag-check)") in r.stderr
    assert "start failed at step 'vllm-ready'" in r.stderr
    assert re.search(r"vLLM exited with status 2 after \d+s", r.stderr), r.stderr
    assert "vllm: error: unrecognized arguments: --swap-space 4" in r.stderr  # vLLM's own words
    assert "rolled back" in r.stderr
    assert_no_leaks(tb)
    # the following start is the next test's first one


def test_container_user_that_cannot_write_the_log_fails_fast(tb: Testbed) -> None:
    """Issue 12: `container.extra_args: [--user, "1000:1000"]` with SSH user root: that user
    cannot write the log directory (root's, mounted at /var/log/dgxcluster), so a detached
    vLLM launch would record nothing and `start` would wait its whole ready timeout, then show
    the previous run's vllm.log. Now start fails at step 'vllm' naming the user and the
    directory, rolls back, and shows nothing of the previous run's log (the flag test's)."""
    before = tb.node_exec("node1", "cat", f"{STATE}/{tb.name}/logs/vllm.log", check=False).stdout
    as_1000 = {"DGXCLUSTER_CONTAINER__EXTRA_ARGS": json.dumps(["--user", "1000:1000"])}
    r = dgx(tb, "start", env=as_1000)
    _timed("container user cannot write the log: start fails", r.elapsed)
    text = flat(r.stderr)
    assert r.returncode == 1, r.stderr
    assert "start failed at step 'vllm'" in text, text
    assert ("vLLM cannot start: the head container's user cannot write /var/log/dgxcluster "
            f"({STATE}/{tb.name}/logs on the node)") in text, text
    assert "container user 1000:1000" in text and "Permission denied" in text, text
    assert "not ready within" not in text and "rolled back" in text
    last = [ln for ln in before.splitlines() if ln.strip()][-1:] or ["(no previous log)"]
    assert last[0] not in r.stderr  # the previous run's log is not shown as this one's
    assert_no_leaks(tb)
    # the following start is the next test's first one


FULL = "dgxc/fault-full"
HF = "/root/.cache/huggingface"


def test_model_sync_after_a_full_disk_reuses_the_partial_files_space(tb: Testbed) -> None:
    """Issue 12: a blob cut off by ENOSPC (`<blob>.dgxc-incoming`, written here by dd until
    the node's small disk, a tmpfs, is full) made every later sync refuse: the free-space
    check counted the partial file against the copy. Now it counts as free, the report says
    what was found, the receiver removes it, the copy lands, and a second sync is a no-op."""
    hub = f"{HF}/hub"
    folder = f"{hub}/models--{FULL.replace('/', '--')}"
    tb.node_exec("node1", *hfcache.build_argv(hub, hfcache.spec(
        FULL, {"model.safetensors": 6_000_000, "config.json": "{}"})))
    blob = tb.node_exec("node1", "sh", "-c", 'ls -S "$1/blobs" | head -n 1', "sh",
                        folder).stdout.strip()
    used = tb.node_exec("node2", "sh", "-c", 'du -sk "$1" 2>/dev/null | cut -f1', "sh",
                        HF, check=False).stdout.strip()
    tb.tb("tmpfs", "node2", HF, f"{int(used or 0) + 8192}k")
    try:
        part = f"{folder}/blobs/{blob}.dgxc-incoming"
        fill = tb.node_exec("node2", "sh", "-c", 'mkdir -p "${1%/*}" && dd if=/dev/zero '
                            'of="$1" bs=64k', "sh", part, check=False)
        assert "No space left on device" in fill.stderr, fill.stderr
        r = dgx(tb, "model", "sync", FULL, env={"COLUMNS": "300"})
        text = flat(r.stdout)
        assert r.returncode == 0, r.stdout + r.stderr
        assert re.search(r"1 partial file\(s\) \([\d.]+ MB\) of an interrupted copy found, "
                         r"removed before this one", text), text
        assert tb.node_exec("node2", "test", "-e", part, check=False).returncode != 0
        again = dgx(tb, "model", "sync", FULL, env={"COLUMNS": "300"})
        assert again.returncode == 0 and "partial" not in again.stdout, again.stdout
        assert "complete and verified" in flat(again.stdout), again.stdout
    finally:
        tb.tb("tmpfs", "node2", HF, "off")
        tb.node_exec("node1", "rm", "-rf", folder)
        tb.node_exec("node2", "rm", "-rf", folder)


def test_dockerd_stopped_on_one_node(tb: Testbed) -> None:
    start_ok(tb)
    tb.tb("dockerd", "node2", "stop")
    try:
        r = dgx(tb, "stop")
        assert r.returncode == 1, r.stderr
        text = flat(r.stdout + r.stderr)
        assert re.search(r"node2 discover failed .*docker is not usable", text), text
        assert "error: node2: not stopped (step 'stop' failed: docker is not usable" in r.stderr
        assert node_leaks(tb, "node1") == []  # the reachable node was cleaned all the same
        refused = dgx(tb, "start")
        assert refused.returncode == 1, refused.stderr
        assert "start failed at step 'preflight'" in refused.stderr
        assert re.search(r"node2: .*docker is not usable", refused.stderr), refused.stderr
        assert "nothing was changed" in refused.stderr
        assert node_leaks(tb, "node1") == []
    finally:
        tb.tb("dockerd", "node2", "start")
    # dockerd stopped the worker container as it went down; the next stop removes it
    assert containers(tb, "node2") == [f"dgxc-{tb.name}-worker exited"]
    stop_ok(tb)
    assert_no_leaks(tb)
    # the following start is the first of the 20 cycles, next


# -- start/stop cycles, two concurrent starts, the token --------------------------------------

#: 8 cycles (20 before): each one is a full Ray start and stop (~30 s on CI's 2 cores); what
#: leaks or shows the token does so within a few cycles, and cycle 5 races a second start.
CYCLES = 8

def test_start_stop_cycles_leave_nothing_and_never_show_the_token(
        tb: Testbed, tmp_path: Path) -> None:
    """CYCLES cycles in a row. Every process command line on the host (nodes and containers
    share its PID namespace) is sampled throughout for HF_TOKEN. Cycle 1 runs with -v and a
    log dir; in cycle 5 a second start races the first and is refused, naming the holder."""
    stop_ok(tb)
    logs = tmp_path / "logs"
    outputs: list[str] = []
    with CmdlineSampler(TOKEN) as sampler:
        for cycle in range(1, CYCLES + 1):
            if cycle == 1:
                r = start_ok(tb, "-v", env={"DGXCLUSTER_LOG_DIR": str(logs)})
            elif cycle == 5:
                first = background(tb, "start")
                first.wait_for(r"^node1: preflight")  # it holds the lock now
                second = dgx(tb, "start")
                assert first.finish() == 0, first.stderr
                r = first
                outputs.append(second.stdout + second.stderr)
                assert second.returncode == 1, second.stderr
                assert re.search(rf"held by dgxcluster start by \S+ pid {first.pid} since",
                                 second.stderr), second.stderr
                _timed("start", first.elapsed)
            else:
                r = start_ok(tb)
                _timed("start", r.elapsed)
            outputs.append(r.stdout + r.stderr)
            if cycle == 1:
                _timed("start -v", r.elapsed)
                for node, role in (("node1", "head"), ("node2", "worker")):
                    env_file = f"{STATE}/{tb.name}/env/{role}.env"
                    assert tb.node_exec(node, "stat", "-c", "%a", env_file).stdout.strip() == "600"
                dry = dgx(tb, "-v", "start", "--dry-run")
                assert dry.returncode == 0 and "HF_TOKEN=******" in dry.stdout
                outputs.append(dry.stdout + dry.stderr)
            s = stop_ok(tb)
            _timed("stop", s.elapsed)
            outputs.append(s.stdout + s.stderr)
            assert f"removed dgxc-{tb.name}-head" in flat(s.stdout), s.stdout
            for node in tb.nodes:
                assert containers(tb, node) == [], (cycle, node)
    assert sampler.hits == []
    assert sampler.saw("raylet") and sampler.saw("gcs_server") and sampler.sweeps > 100
    for node in tb.nodes:  # after the sampler: this grep's own command line holds the token
        grep = tb.node_exec(node, "grep", "-rl", TOKEN, f"{STATE}/{tb.name}", check=False)
        assert grep.stdout == "", grep.stdout  # no node-side log holds it, no env-file is left
    assert all(TOKEN not in o for o in outputs)
    assert "remote.run" in outputs[0]  # -v showed the remote commands
    files = [f for f in logs.rglob("*") if f.is_file()]
    assert all(TOKEN not in f.read_text(errors="replace") for f in files)
    assert_no_leaks(tb)


# -- start: a worker cut off after its container started, SIGINT ---------------------------

def test_worker_cut_off_after_its_container_started_is_reported_and_cleaned_later(
        tb: Testbed) -> None:
    stop_ok(tb)
    run = background(tb, "start")
    try:
        run.wait_for(r"^node2: ray-ready: joining")  # its container runs, Ray is joining
        tb.tb("cut", "node2")
        rc = run.finish()
    finally:
        tb.tb("heal", "node2")
    _timed("cut after container: start fails", run.elapsed)
    err = run.stderr
    assert rc == 3, err
    assert "start failed at step 'ray-ready'" in err and "node2: unreachable" in err
    assert f"node1: removed dgxc-{tb.name}-head" in err
    worker_env = f"{STATE}/{tb.name}/env/worker.env"
    assert re.search(rf"node2: could not roll back .*left behind: dgxc-{tb.name}-worker, "
                     rf"{re.escape(worker_env)}; run `dgxcluster stop` once it is reachable", err)
    assert node_leaks(tb, "node1") == []
    left = node_leaks(tb, "node2")
    assert f"container dgxc-{tb.name}-worker (Up" in " ".join(left) and \
        f"env-file {worker_env}" in left
    r = start_ok(tb)  # the next start replaces what the cut left behind
    assert f"started dgxc-{tb.name}-worker (replaced" in flat(r.stdout), r.stdout
    stop_ok(tb)
    assert_no_leaks(tb, wait_s=90)  # sshd sessions of the cut connections end on their own


def test_sigint_during_start_rolls_back_while_holding_the_lock(tb: Testbed) -> None:
    """Ctrl-C while the workers start (a fan-out): the rollback removes everything, and the
    lock stays held until it is done (no second start can slip in half-way)."""
    probe = (f'{LOCK_HELD} && echo held || echo free; '
             'docker ps -aq --filter "label=dgxcluster.role=head" | wc -l')
    run = background(tb, "start")
    run.wait_for(r"^node2: ray-workers: docker run")
    run.interrupt()
    seen: list[tuple[str, int]] = []

    def watch() -> None:
        while run.proc.poll() is None:
            out = tb.node_exec("node1", "sh", "-c", probe, "sh", tb.name, check=False).stdout.split()
            if len(out) == 2 and run.proc.poll() is None:
                seen.append((out[0], int(out[1])))

    watcher = threading.Thread(target=watch)
    watcher.start()
    rc = run.finish()
    watcher.join()
    _timed("sigint start: exit after signal", run.elapsed)
    err = run.stderr
    assert rc == 130, err
    assert "start interrupted at step 'ray-workers': rolling back" in err
    assert f"rolled back node1: removed dgxc-{tb.name}-head" in err
    assert "error: interrupted" in err
    assert ("free", 1) not in seen, seen  # never: lock free while the head container remains
    assert_no_leaks(tb)
    start_ok(tb)  # at once: no stale lock, nothing in the way
    stop_ok(tb)


# -- build: sshd killed, SIGINT --------------------------------------------------------------

SLOW_STEP = "RUN echo dgxc-slow-step-begin {nonce} && sleep 10 && echo dgxc-slow-step-end\n"


@pytest.fixture(scope="module")
def slow_build(tb: Testbed, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    """A copy of the testbed image's context whose last step takes 10 s (wheels hard-linked),
    and an inventory that builds it under the same image name (so BuildKit's cache and the
    inline cache of `current` keep every other step cached). The module's end builds the
    repo context again, so `current` is the testbed image once more."""
    root = tmp_path_factory.mktemp("slowbuild")
    src = REPO / "images" / "testbed"
    ctx = root / "ctx"
    shutil.copytree(src, ctx, ignore=shutil.ignore_patterns("wheels"))
    shutil.copytree(src / "wheels", ctx / "wheels", copy_function=os.link)
    base = (ctx / "Dockerfile").read_text()
    (root / "Dockerfile.base").write_text(base)
    inv = yaml.safe_load(tb.inventory.read_text())
    inv["image"]["context"] = str(ctx)
    inv["ssh"]["known_hosts"] = str(tb.known_hosts)
    (root / "inv.yaml").write_text(yaml.safe_dump(inv))
    yield ctx, root / "inv.yaml"
    tb.ensure_image()


def _new_slow_step(ctx: Path) -> str:
    base = (ctx.parent / "Dockerfile.base").read_text()
    (ctx / "Dockerfile").write_text(base + SLOW_STEP.format(nonce=uuid.uuid4().hex))
    return scan(ctx, build_args=BUILD_ARGS).content_tag


def _has_tag(tb: Testbed, node: str, tag: str) -> bool:
    return tb.node_exec(node, "docker", "image", "inspect", f"dgxcluster/testbed:{tag}",
                        check=False).returncode == 0


def test_sshd_killed_during_a_build(tb: Testbed, slow_build: tuple[Path, Path],
                                    tmp_path: Path) -> None:
    ctx, inv = slow_build
    tag = _new_slow_step(ctx)
    logs = tmp_path / "logs"
    env = {**ENV, "DGXCLUSTER_LOG_DIR": str(logs)}
    with CmdlineSampler(TOKEN) as sampler:
        run = Background("-v", "-i", str(inv), "build", "--strategy", "each", env=env)
        try:
            run.wait_for(r"^node2: .*dgxc-slow-step-begin")
            tb.tb("sshd", "node2", "stop")
            rc = run.finish()
        finally:
            tb.tb("sshd", "node2", "start")
    err, out = run.stderr, flat(run.stdout)
    assert rc == 3, err
    assert re.search(r"node2 build unreachable connection lost while running", out), out
    assert re.search(r"node1 build changed built in", out), out
    assert _has_tag(tb, "node1", tag) and not _has_tag(tb, "node2", tag)
    # the token went to the build only as a BuildKit secret file, never on a command line
    assert sampler.hits == [] and sampler.saw("docker")
    assert TOKEN not in run.stdout + err and "--secret id=HF_TOKEN,src=" in err
    assert all(TOKEN not in f.read_text(errors="replace") for f in logs.rglob("*") if f.is_file())
    # node2's build stopped once its client was gone: no docker build, no secrets, no lock
    assert_no_leaks(tb)
    again = Background("-i", str(inv), "build", "--strategy", "each", "--json", env=ENV)
    assert again.finish() == 0, again.stderr
    rows = {n["node"]: n for n in json.loads(again.stdout)["nodes"]}
    assert rows["node1"]["detail"] == "up to date" and rows["node2"]["status"] == "changed"
    assert _has_tag(tb, "node2", tag)
    assert_no_leaks(tb)


def test_sigint_during_a_build_stops_it_on_every_node(tb: Testbed,
                                                      slow_build: tuple[Path, Path]) -> None:
    ctx, inv = slow_build
    tag = _new_slow_step(ctx)
    run = Background("-i", str(inv), "build", "--strategy", "each", env=ENV)
    run.wait_for(r"^node1: .*dgxc-slow-step-begin")
    run.wait_for(r"^node2: .*dgxc-slow-step-begin")
    t = time.monotonic()
    run.interrupt()
    rc = run.finish()
    _timed("sigint build: exit after signal", time.monotonic() - t)
    assert rc == 130, run.stderr
    assert "error: interrupted" in run.stderr, run.stderr[-2000:]
    assert_no_leaks(tb, wait_s=8)  # the nodes stop their builds within seconds (watchdog)
    assert not _has_tag(tb, "node1", tag) and not _has_tag(tb, "node2", tag)
    again = Background("-i", str(inv), "build", "--strategy", "each", env=ENV)
    assert again.finish() == 0, again.stderr  # the context lock is free at once
    assert _has_tag(tb, "node1", tag) and _has_tag(tb, "node2", tag)
    assert_no_leaks(tb)


# -- a node that stops answering in the middle of an SFTP write -----------------------------
# `scripts/testbed hang NODE --during-sftp-write GLOB` freezes NODE's sshd (listener and
# sessions; connections stay up, nothing answers) when a write to a matching file begins.

#: How long an SFTP request may go unanswered: 3 x ssh.connect_timeout (SshConnection.put).
PUT_TIMEOUT = 3 * CONNECT_TIMEOUT
FROZEN = {"DGXCLUSTER_SSH__CONNECT_TIMEOUT": str(CONNECT_TIMEOUT)}


def test_node_frozen_while_model_sync_ships_the_node_side_bundle(tb: Testbed) -> None:
    """node2 stops answering while `model sync` writes dgxcluster's node-side bundle to it:
    the sync gives up on node2 after the SFTP timeout, exits 3 naming node2 and the file, no
    traceback; once node2 answers again the next sync completes it and nothing is left,
    the unfinished temporary file included."""
    repo, hub = "dgxc/fault-frozen", "/root/.cache/huggingface/hub"
    bins = f"{STATE}/{tb.name}/bin"
    tb.node_exec("node1", *hfcache.build_argv(hub, hfcache.spec(
        repo, {"config.json": "{}", "model.safetensors": 1 << 20})))
    for node in tb.nodes:  # so the bundle has to travel again
        tb.node_exec(node, "sh", "-c", f"rm -f {bins}/nodeside-*")
    tb.tb("hang", "node2", "--during-sftp-write", "nodeside-*")
    try:
        r = dgx(tb, "model", "sync", repo, "--from", "node1", "--json", env=FROZEN, timeout=120)
    finally:
        tb.tb("unhang", "node2")
    _timed("frozen model sync", r.elapsed)
    try:
        assert r.returncode == 3, r.stderr
        assert "Traceback" not in r.stderr
        rows = {o["node"]: o for o in json.loads(r.stdout)["nodes"]}
        assert rows["node2"]["status"] == "unreachable", rows
        assert re.fullmatch(rf"no answer within {PUT_TIMEOUT:g}s while writing "
                            rf"{bins}/nodeside-[0-9a-f]{{12}}\.pyz \(SFTP\)",
                            rows["node2"]["detail"]), rows
        assert rows["node1"]["status"] == "changed", rows
        assert r.elapsed < 3 * PUT_TIMEOUT, r.elapsed  # gave up once, did not wait again
        assert tb.node_exec("node2", "sh", "-c", f"ls {bins}").stdout.count(".tmp-") == 1
        again = dgx(tb, "model", "sync", repo, "--from", "node1", "--json")
        assert again.returncode == 0, again.stderr
        rows = {o["node"]: o for o in json.loads(again.stdout)["nodes"]}
        assert rows["node2"]["status"] == "changed", rows
        assert_no_leaks(tb)
    finally:
        for node in tb.nodes:
            tb.node_exec(node, "rm", "-rf", f"{hub}/models--dgxc--fault-frozen")


def test_node_frozen_while_build_writes_its_secret_file(tb: Testbed,
                                                        slow_build: tuple[Path, Path]) -> None:
    """node2 stops answering while `build` writes the HF token file for BuildKit: node2's
    build ends with a timeout naming node2 and the file, node1's completes, exit 3, no
    traceback; the next build completes node2 and removes the unfinished secret file."""
    ctx, inv = slow_build
    tag = _new_slow_step(ctx)
    tb.tb("hang", "node2", "--during-sftp-write", "HF_TOKEN*")
    try:
        run = Background("-i", str(inv), "build", "--strategy", "each", "--json",
                         env={**ENV, **FROZEN})
        rc = run.finish()
    finally:
        tb.tb("unhang", "node2")
    _timed("frozen build", run.elapsed)
    assert rc == 3, run.stderr
    assert "Traceback" not in run.stderr
    rows = {n["node"]: n for n in json.loads(run.stdout)["nodes"]}
    assert rows["node2"]["status"] == "unreachable", rows
    assert re.fullmatch(rf"no answer within {PUT_TIMEOUT:g}s while writing "
                        rf"{STATE}/{tb.name}/env/build-\S+/HF_TOKEN \(SFTP\)",
                        rows["node2"]["detail"]), rows
    assert rows["node1"]["status"] == "changed" and rows["node1"]["detail"].startswith("built in")
    assert _has_tag(tb, "node1", tag) and not _has_tag(tb, "node2", tag)
    left = tb.node_exec("node2", "sh", "-c", f"find {STATE}/{tb.name}/env -type f").stdout
    assert re.fullmatch(r"\S+/env/build-\S+/HF_TOKEN\.tmp-\w+\n", left), left
    again = Background("-i", str(inv), "build", "--strategy", "each", "--json", env=ENV)
    assert again.finish() == 0, again.stderr
    rows = {n["node"]: n for n in json.loads(again.stdout)["nodes"]}
    assert rows["node1"]["detail"] == "up to date" and rows["node2"]["status"] == "changed"
    assert_no_leaks(tb)
