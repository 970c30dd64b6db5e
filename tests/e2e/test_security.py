"""Host keys and tokens, end to end on the docker testbed.

- An unknown or changed host key is never accepted silently: `start` and `build` refuse
  before changing anything on any node (tests/e2e/test_exec.py proves it for `exec`).
- A Hugging Face token is masked in everything dgxcluster prints, even when this shell
  does not know it (read back from a node). Where HF_TOKEN must never appear during
  start (process command lines, -v, --dry-run, logs): tests/e2e/test_faults.py (20
  cycles) and test_start_stop.py; during build: test_faults.py (sshd killed during a
  build) and test_build.py; during model pull: test_model_pull.py.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from dgxcluster.core.buildcontext import scan
from tests.conftest import BUILD_ARGS, REPO, Testbed, run_cli
from tests.leaks import assert_no_leaks, lock_held, node_leaks

pytestmark = [pytest.mark.e2e, pytest.mark.docker]

ENV = {"DGXCLUSTER_CONTAINER__ENV": json.dumps({"DGXCLUSTER_STANDIN_LOAD_S": "0"})}


@pytest.fixture(scope="module")
def tb(testbed_docker: Testbed) -> Iterator[Testbed]:
    testbed_docker.ensure_image()
    testbed_docker.dgx("stop", env=ENV)
    yield testbed_docker


@pytest.fixture
def changed_context(tb: Testbed, tmp_path: Path) -> tuple[Path, str]:
    """A copy of the testbed context with one changed file, so a build has work to do."""
    src = REPO / "images" / "testbed"
    ctx = tmp_path / "ctx"
    shutil.copytree(src, ctx, ignore=shutil.ignore_patterns("wheels"))
    shutil.copytree(src / "wheels", ctx / "wheels", copy_function=os.link)
    with open(ctx / "entrypoint.sh", "a") as fh:
        fh.write(f"# {uuid.uuid4().hex}\n")
    inv = yaml.safe_load(tb.inventory.read_text())
    inv["image"]["context"] = str(ctx)
    inv["ssh"]["known_hosts"] = str(tb.known_hosts)
    path = tmp_path / "inv.yaml"
    path.write_text(yaml.safe_dump(inv))
    return path, scan(ctx, build_args=BUILD_ARGS).content_tag


def test_changed_host_key_start_and_build_refuse_before_changing_anything(
        tb: Testbed, changed_context: tuple[Path, str]) -> None:
    inv, tag = changed_context
    tb.tb("rekey", "node2")
    try:
        start = tb.dgx("start", env=ENV)
        build = run_cli("-i", str(inv), "build")
        lock_free = not lock_held(tb, "node1")
        built = tb.node_exec("node1", "docker", "image", "inspect", f"dgxcluster/testbed:{tag}",
                             check=False).returncode == 0
        left = node_leaks(tb, "node1")
    finally:
        tb.repair()
    for r in (start, build):
        assert r.returncode == 3, r.stderr
        assert "HOST KEY CHANGED" in r.stderr and "node2" in r.stderr
        assert str(tb.known_hosts) in r.stderr  # which file to fix
    assert "start failed at step 'preflight'" in start.stderr and "nothing was changed" in start.stderr
    assert "build refused before changing anything: host key check" in build.stderr
    assert not built  # distribute would have built on node1 first: it did not
    assert lock_free and left == []


def test_unknown_host_key_start_refuses_naming_node_and_fix(tb: Testbed, tmp_path: Path) -> None:
    kh = tmp_path / "known_hosts"
    kept = "".join(ln for ln in tb.known_hosts.read_text().splitlines(keepends=True)
                   if not ln.startswith(_host(tb, "node2") + " "))
    kh.write_text(kept)
    inv = tb.portable_doc()
    inv["ssh"]["known_hosts"] = str(kh)
    path = tmp_path / "inv.yaml"
    path.write_text(yaml.safe_dump(inv))
    r = run_cli("-i", str(path), "start", env=ENV)
    assert r.returncode == 3, r.stderr
    assert "node2" in r.stderr and "unknown host key" in r.stderr and "ssh-keyscan" in r.stderr
    assert "nothing was changed" in r.stderr
    assert kh.read_text() == kept  # strict: nothing was recorded
    assert_no_leaks(tb)


def _host(tb: Testbed, node: str) -> str:
    inv = yaml.safe_load(tb.inventory.read_text())
    return next(n["host"] for n in inv["nodes"] if n["name"] == node)


def test_a_token_read_back_from_a_node_is_masked_without_knowing_it(tb: Testbed) -> None:
    """This shell has no HF_TOKEN; a file on the node holds one. Whatever prints it (exec
    live output, --json, -v log lines) shows the mask."""
    token = "hf_" + uuid.uuid4().hex + "Zz9"
    tb.node_exec("node1", "sh", "-c", 'umask 077; printf "HF_TOKEN=%s\\n" "$1" > /root/token.env',
                 "sh", token)
    env = {"HF_TOKEN": "", "HUGGING_FACE_HUB_TOKEN": ""}
    try:
        live = tb.dgx("-v", "exec", "-n", "node1", "--", "cat", "/root/token.env", env=env)
        as_json = tb.dgx("exec", "--json", "-n", "node1", "--", "cat", "/root/token.env", env=env)
    finally:
        tb.node_exec("node1", "rm", "-f", "/root/token.env")
    assert live.returncode == 0 and as_json.returncode == 0
    assert live.stdout == "node1: HF_TOKEN=******\n"
    assert json.loads(as_json.stdout)[0]["stdout"] == "HF_TOKEN=******\n"
    for r in (live, as_json):
        assert token not in r.stdout + r.stderr
