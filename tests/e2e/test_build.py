"""`dgxcluster build` on the 2-node docker testbed: real sshd, real dockerd per node.

The first build (the repo's testbed image, `distribute`) is the only expensive one; the
others change one file of a copy of the same context, so docker's layer cache (and the
inline cache `build` puts in every image) keeps the Ray layer from being rebuilt. The last
test builds the repo context again, leaving `<image>:current` as other e2e tests expect.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from dgxcluster.core.buildcontext import scan
from dgxcluster.core.imageid import compare, expected
from dgxcluster.core.session import Session
from dgxcluster.image.check import image_state
from dgxcluster.inventory import load_inventory
from tests.conftest import BUILD_ARGS, REPO, Testbed
from tests.leaks import assert_no_leaks

pytestmark = [pytest.mark.e2e, pytest.mark.docker]

IMAGE = "dgxcluster/testbed"
#: This run's own: BuildKit caches a RUN by its text (a secret mount is not part of the key).
NONCE = uuid.uuid4().hex[:12]
WHEELS = REPO / "images" / "testbed" / "wheels"


def _ensure_wheels() -> None:
    if not any(WHEELS.glob("ray-*.whl")):
        subprocess.run([str(REPO / "images" / "testbed" / "fetch-wheels")], check=True,
                       capture_output=True, timeout=900)


@pytest.fixture(scope="module")
def tb(testbed_docker: Testbed) -> Testbed:
    _ensure_wheels()
    return testbed_docker


@pytest.fixture(scope="module")
def first(tb: Testbed, tmp_path_factory: pytest.TempPathFactory) -> subprocess.CompletedProcess[str]:
    """The repo's testbed image, built once on node1 and streamed to node2.

    Other modules may have built it already (they share the session testbed): untag it
    first, so this is a real first build (BuildKit's cache survives, so it stays cheap)."""
    tag = scan(REPO / "images" / "testbed", build_args=BUILD_ARGS).content_tag
    for node in tb.nodes:
        tb.node_exec(node, "docker", "rmi", "-f", f"{IMAGE}:{tag}", f"{IMAGE}:current",
                     check=False)
    logs = tmp_path_factory.mktemp("logs-first")
    return tb.dgx("build", "--all-nodes", "--strategy", "distribute", "--json",
                  env={"DGXCLUSTER_LOG_DIR": str(logs)})


@pytest.fixture(scope="module")
def copy(tb: Testbed, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A copy of the testbed context (wheels hard-linked, never written) and an inventory
    that builds it under the same image name."""
    root = tmp_path_factory.mktemp("copy")
    ctx = root / "ctx"
    src = REPO / "images" / "testbed"
    shutil.copytree(src, ctx, ignore=shutil.ignore_patterns("wheels"))
    shutil.copytree(src / "wheels", ctx / "wheels", copy_function=os.link)
    inv = root / "inv.yaml"
    inv.write_text(tb.inventory.read_text()
                   .replace("context: ../images/testbed", f"context: {ctx}")
                   .replace(f"known_hosts: {tb.known_hosts.name}", f"known_hosts: {tb.known_hosts}"))
    return ctx, inv


def _change(ctx: Path, text: str) -> str:
    """One changed file; the run's own nonce too, so a content tag built by an earlier run
    on a testbed that outlived it can never make this one a no-op."""
    with open(ctx / "entrypoint.sh", "a") as fh:
        fh.write(f"# {text} {NONCE}\n")
    return scan(ctx, build_args=BUILD_ARGS).content_tag


def _run(inv: Path, args: tuple[str, ...], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    from tests.conftest import run_cli

    return run_cli("-i", str(inv), *args, "--json", env=env)


def _rows(p: subprocess.CompletedProcess[str]) -> dict[str, str]:
    """node -> "step status detail", from `build --json`."""
    data = json.loads(p.stdout)
    return {n["node"]: f"{n['step']} {n['status']} {n['detail']}" for n in data["nodes"]}


def _inspect(tb: Testbed, node: str, ref: str) -> dict[str, object] | None:
    p = tb.node_exec(node, "docker", "image", "inspect", ref, check=False)
    return json.loads(p.stdout)[0] if p.returncode == 0 else None


def _record(tb: Testbed, node: str) -> dict[str, str]:
    path = f"/root/.local/state/dgxcluster/{tb.name}/records/image-dgxcluster_testbed.json"
    return json.loads(tb.node_exec(node, "cat", path).stdout)


def test_distribute_builds_once_and_every_node_holds_the_same_image(
        tb: Testbed, first: subprocess.CompletedProcess[str]) -> None:
    assert first.returncode == 0, first.stderr[-3000:]
    rows = _rows(first)
    assert rows["node1"].startswith("build changed built in")
    assert rows["node2"].startswith("receive changed received from node1")
    tag = scan(REPO / "images" / "testbed", build_args=BUILD_ARGS).content_tag
    ids = {}
    for node in tb.nodes:
        img = _inspect(tb, node, f"{IMAGE}:{tag}")
        assert img is not None, node
        ids[node] = img["Id"]
        assert img["Config"]["Labels"]["dgxcluster.content-tag"] == tag  # type: ignore[index]
        cur = _inspect(tb, node, f"{IMAGE}:current")
        assert cur is not None and cur["Id"] == img["Id"]
        rec = _record(tb, node)
        assert (rec["content_tag"], rec["image_id"], rec["source"]) == (tag, img["Id"], "node1")
    assert ids["node1"] == ids["node2"]


def test_second_build_is_a_noop_that_runs_no_docker_build(
        tb: Testbed, first: subprocess.CompletedProcess[str], tmp_path: Path) -> None:
    p = tb.dgx("-v", "build", "--all-nodes", env={"DGXCLUSTER_LOG_DIR": str(tmp_path),
                                                  "COLUMNS": "120"})
    assert p.returncode == 0, p.stderr[-3000:]
    table = [ln for ln in p.stdout.splitlines() if "node" in ln and "│" in ln]
    assert len(table) == 2 and all("up to date" in ln and "unchanged" in ln for ln in table), p.stdout
    # -v shows every remote command: only the probe ran, no docker build, no transfer
    assert "remote.run" in p.stderr
    assert "docker build" not in p.stderr and "DOCKER_BUILDKIT" not in p.stderr
    assert "nodeside-" not in p.stderr and "remote.put" not in p.stderr
    assert not list(tmp_path.rglob("build.log"))
    with Session.open(load_inventory(tb.inventory), command="test") as s:
        want = expected(s.inventory).content_tag
        states = image_state(s, content_tag=want)
    assert all(st.wanted_present for st in states.values())
    verdict = compare(states, expected=want)
    assert verdict.consistent and verdict.content_tag == want


def test_each_after_a_one_file_change_sends_that_file_and_reuses_layers(
        tb: Testbed, first: subprocess.CompletedProcess[str], copy: tuple[Path, Path],
        tmp_path: Path) -> None:
    ctx, inv = copy
    tag = _change(ctx, "each")
    p = _run(inv, ("build", "--strategy", "each"), {"DGXCLUSTER_LOG_DIR": str(tmp_path)})
    assert p.returncode == 0, p.stderr[-3000:]
    rows = _rows(p)
    total = len(scan(ctx).files)  # the wheels fetch-wheels left there, plus ~9 files
    # node1 built the repo context before: only entrypoint.sh travels
    assert "send 1 file(s)" in rows["node1"] and f"{total - 1} unchanged" in rows["node1"], rows
    # node2 only ever received an image: it gets the whole context, and the Ray layer comes
    # from the inline cache of the image it received
    assert f"send {total} file(s)" in rows["node2"], rows
    log2 = next(tmp_path.rglob("node2/build.log")).read_text()
    assert "pip install" in log2 and "CACHED" in log2
    for node in tb.nodes:
        assert _inspect(tb, node, f"{IMAGE}:{tag}") is not None


def test_distribute_ships_only_the_layers_the_peer_lacks(
        tb: Testbed, first: subprocess.CompletedProcess[str], copy: tuple[Path, Path]) -> None:
    ctx, inv = copy
    tag = _change(ctx, "distribute")
    p = _run(inv, ("build", "--strategy", "distribute"), {})
    assert p.returncode == 0, p.stderr[-3000:]
    rows = _rows(p)
    assert "layer(s) already there" in rows["node2"], rows
    sent_kb = rows["node2"].split("received from node1 (")[1].split(" ")
    assert sent_kb[1] == "kB", rows  # a few kB, not the 570 MB image
    a, b = (_inspect(tb, n, f"{IMAGE}:{tag}") for n in tb.nodes)
    assert a is not None and b is not None and a["Id"] == b["Id"]


def test_dry_run_says_what_would_happen_and_changes_nothing(
        tb: Testbed, first: subprocess.CompletedProcess[str], copy: tuple[Path, Path]) -> None:
    ctx, inv = copy
    tag = _change(ctx, "dry run")
    p = _run(inv, ("build", "--dry-run"), {})
    assert p.returncode == 0, p.stderr[-3000:]
    rows = _rows(p)
    assert "would build here (send 1 file(s)" in rows["node1"]
    assert "would receive the image from node1" in rows["node2"]
    assert all(_inspect(tb, n, f"{IMAGE}:{tag}") is None for n in tb.nodes)


def test_failing_build_shows_its_last_lines_and_the_other_node_completes(
        tb: Testbed, first: subprocess.CompletedProcess[str], copy: tuple[Path, Path]) -> None:
    ctx, inv = copy
    tag = _change(ctx, "broken node2")
    base = "dgxcluster/testbed-base:bookworm"
    backup = tb.node_exec("node2", "docker", "image", "inspect", "--format", "{{.Id}}", base).stdout
    tb.node_exec("node2", "docker", "tag", backup.strip(), "btest/base-backup:1")
    tb.node_exec("node2", "docker", "rmi", base)
    try:
        p = _run(inv, ("build", "--strategy", "each"), {})
    finally:
        tb.node_exec("node2", "docker", "tag", "btest/base-backup:1", base)
        tb.node_exec("node2", "docker", "rmi", "btest/base-backup:1")
    assert p.returncode == 1, p.stderr[-3000:]
    rows = _rows(p)
    assert rows["node1"].startswith("build changed built"), rows
    assert rows["node2"].startswith("build failed build failed (exit 1)"), rows
    assert "node2: last " in p.stderr and "lines:" in p.stderr
    tail = p.stderr.split("node2: last ")[1]
    assert "testbed-base" in tail and len(tail.splitlines()) <= 31 + 3
    assert "Traceback" not in p.stderr
    assert _inspect(tb, "node1", f"{IMAGE}:{tag}") is not None
    assert _inspect(tb, "node2", f"{IMAGE}:{tag}") is None


def test_stopped_dockerd_is_reported_and_the_other_node_completes(
        tb: Testbed, first: subprocess.CompletedProcess[str], copy: tuple[Path, Path]) -> None:
    ctx, inv = copy
    tag = _change(ctx, "dockerd down")
    tb.tb("dockerd", "node2", "stop")
    try:
        p = _run(inv, ("build", "--strategy", "distribute"), {})
    finally:
        tb.tb("dockerd", "node2", "start")
    assert p.returncode == 1, p.stderr[-3000:]
    rows = _rows(p)
    assert rows["node1"].startswith("build changed built"), rows
    assert "Cannot connect to the Docker daemon" in rows["node2"], rows
    assert _inspect(tb, "node1", f"{IMAGE}:{tag}") is not None


def test_unreachable_node_exits_3_and_the_other_is_still_served(
        tb: Testbed, first: subprocess.CompletedProcess[str], copy: tuple[Path, Path]) -> None:
    _, inv = copy
    tb.tb("sshd", "node2", "stop")
    try:
        p = _run(inv, ("build", "--strategy", "each"), {})
    finally:
        tb.tb("sshd", "node2", "start")
    assert p.returncode == 3, p.stderr[-3000:]
    rows = _rows(p)
    assert rows["node2"].startswith("check unreachable"), rows
    assert "unchanged up to date" in rows["node1"] or "changed" in rows["node1"], rows


SECRET_DOCKERFILE = f"""\
FROM dgxcluster/testbed-base:bookworm
RUN --mount=type=secret,id=HF_TOKEN \\
    echo "token in build output: $(cat /run/secrets/HF_TOKEN) (run {NONCE})" \\
 && sha256sum /run/secrets/HF_TOKEN | cut -d' ' -f1 > /token.sha256
"""


def test_hf_token_reaches_the_build_only_as_a_buildkit_secret(
        tb: Testbed, tmp_path: Path) -> None:
    token = "hf_e2eSecretValueThatMustNotLeak"
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(SECRET_DOCKERFILE)
    inv = tmp_path / "inv.yaml"
    inv.write_text(tb.inventory.read_text()
                   .replace("context: ../images/testbed", f"context: {ctx}")
                   .replace("name: dgxcluster/testbed", "name: btest/secret")
                   .replace(f"known_hosts: {tb.known_hosts.name}", f"known_hosts: {tb.known_hosts}"))
    logs = tmp_path / "logs"
    p = _run(inv, ("-v", "build", "--node", "node1", "--strategy", "each"),
             {"HF_TOKEN": token, "DGXCLUSTER_LOG_DIR": str(logs)})
    assert p.returncode == 0, p.stderr[-3000:]
    assert token not in p.stdout and token not in p.stderr
    assert "token in build output: ******" in p.stderr  # the build echoed it; we masked it
    assert "--secret id=HF_TOKEN,src=" in p.stderr and "HF_TOKEN=" not in p.stderr
    for f in logs.rglob("*"):
        if f.is_file():
            assert token not in f.read_text(errors="replace"), f
    ref = f"btest/secret:{scan(ctx, build_args=BUILD_ARGS).content_tag}"
    digest = tb.node_exec("node1", "docker", "run", "--rm", ref, "cat", "/token.sha256").stdout
    assert digest.strip() == hashlib.sha256(token.encode()).hexdigest()
    history = tb.node_exec("node1", "docker", "history", "--no-trunc", ref).stdout
    inspect = tb.node_exec("node1", "docker", "image", "inspect", ref).stdout
    assert token not in history and token not in inspect
    env_dir = f"/root/.local/state/dgxcluster/{tb.name}/env"
    left = tb.node_exec("node1", "sh", "-c", f"ls -A {env_dir} 2>/dev/null; true").stdout
    assert "build-" not in left


def test_building_the_repo_context_again_only_moves_current(
        tb: Testbed, first: subprocess.CompletedProcess[str]) -> None:
    p = tb.dgx("build", "--all-nodes", "--json")
    assert p.returncode == 0, p.stderr[-3000:]
    rows = _rows(p)
    assert rows == {n: "tag changed image was here; moved `current` to it" for n in tb.nodes}
    tag = scan(REPO / "images" / "testbed", build_args=BUILD_ARGS).content_tag
    for node in tb.nodes:
        cur = _inspect(tb, node, f"{IMAGE}:current")
        assert cur is not None
        assert cur["Config"]["Labels"]["dgxcluster.content-tag"] == tag  # type: ignore[index]
    again = tb.dgx("build", "--all-nodes", "--json")
    assert _rows(again) == {n: "check unchanged up to date" for n in tb.nodes}


@pytest.fixture(autouse=True)
def _no_agents_left(tb: Testbed) -> Iterator[None]:
    yield
    for node in tb.nodes:
        ps = tb.tb("ps", node).stdout
        assert "nodeside-" not in ps, ps  # no relay agent or layer filter
    assert_no_leaks(tb)  # no build, agent, secret file, temporary file or lock left either
