"""`dgxcluster model pull` up to the call into huggingface_hub: the testbed has no internet,
so the hub is really unreachable. The failure must say so plainly, and HF_TOKEN must appear
in no output, no remote command line, and no file left on the node."""

from __future__ import annotations

import subprocess
import sys
import threading

import pytest

from tests.children import spawn
from tests.conftest import Testbed

pytestmark = [pytest.mark.e2e, pytest.mark.docker]

TOKEN = "hf_dgxcTestTokenNeverPrinted0123456789"
# in no node's cache: offline, `hf download` would answer from a cached snapshot
MODEL = "dgxc/never-downloaded"


def test_pull_with_the_hub_unreachable_fails_clearly_and_leaks_no_token(
        testbed_docker: Testbed) -> None:
    tb = testbed_docker
    tb.ensure_image()
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("DGXCLUSTER_")}
    env["HF_TOKEN"] = TOKEN
    proc = spawn(
        [sys.executable, "-m", "dgxcluster", "-v", "-i", str(tb.inventory), "model", "pull",
         MODEL], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    seen: list[str] = []

    def watch() -> None:  # every process on the head while the pull runs, with full argv
        while proc.poll() is None:
            seen.append(tb.tb("ps", "node1", check=False).stdout)

    watcher = threading.Thread(target=watch)
    watcher.start()
    out, err = proc.communicate(timeout=600)
    watcher.join()
    assert proc.returncode == 1, err
    assert "Traceback" not in err
    final = [ln for ln in err.splitlines() if ln.startswith("error: ")]
    assert final and "cannot reach the Hugging Face hub" in final[0], err
    assert f"dgxcluster model sync {MODEL}" in err
    runs = [ln for ln in err.splitlines() if "remote.run" in ln and "docker run" in ln]
    assert runs and "--env-file" in runs[0] and f"download {MODEL}" in runs[0]
    assert TOKEN not in out + err
    assert "******" not in "\n".join(ln for ln in err.splitlines() if "remote.run" in ln)
    assert any(f"download {MODEL}" in snapshot for snapshot in seen), "watched the pull"
    assert not any(TOKEN in snapshot for snapshot in seen)
    left = tb.node_exec("node1", "sh", "-c",
                        "ls /root/.local/state/dgxcluster/*/env/ 2>/dev/null; "
                        "grep -rl \"$1\" /root /tmp 2>/dev/null; true", "sh", TOKEN).stdout
    assert "model-pull" not in left and TOKEN not in left, left
    assert "dgxc-" not in tb.node_exec("node1", "docker", "ps", "-a").stdout
