"""Commands forked from a warm server (`dgxcluster warm`) against real sshd and dockerd on the
emulated cluster: the same answers, bytes and refusals as a cold start."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Testbed, run_cli

pytestmark = pytest.mark.e2e


@pytest.fixture
def warm(tmp_path: Path) -> Iterator[dict[str, str]]:
    env = {"DGXCLUSTER_WARM_SOCKET": str(tmp_path / "w" / "warm.sock")}
    p = run_cli("warm", "start", env=env, timeout=120)
    assert p.returncode == 0, p.stderr
    yield env
    run_cli("warm", "stop", env=env, timeout=60)


def _served(env: dict[str, str]) -> int:
    return int(json.loads(run_cli("warm", "status", "--json", env=env, timeout=60).stdout)
               ["served"])


def _steady(doc: dict[str, Any]) -> dict[str, Any]:
    """status --json without what moves between two reads (free memory)."""
    for node in doc["nodes"]:
        node.pop("memory", None)
    return doc


def test_status_json_is_the_same_warm_and_cold(testbed_docker: Testbed,
                                               warm: dict[str, str]) -> None:
    cold = testbed_docker.dgx("status", "--json")
    hot = testbed_docker.dgx("status", "--json", env=warm)
    assert _served(warm) == 1
    assert hot.returncode == cold.returncode == 0, hot.stderr
    assert _steady(json.loads(hot.stdout)) == _steady(json.loads(cold.stdout))
    assert hot.stderr == cold.stderr


def test_exec_streams_every_byte_and_the_exit_code(testbed3: Testbed,
                                                   warm: dict[str, str]) -> None:
    script = ("head -c 20000000 /dev/urandom | base64 -w 76 > /tmp/out; md5sum < /tmp/out >&2; "
              "cat /tmp/out; exit 7")
    p = testbed3.dgx("exec", "-n", "node2", "--", "sh", "-c", script, env=warm)
    assert p.returncode == 1  # a node's command failed
    assert "node2: exited 7" in p.stderr
    body = "".join(line.removeprefix("node2: ") + "\n" for line in p.stdout.splitlines())
    remote_md5 = p.stderr.split("node2: ", 1)[1].split()[0]
    assert hashlib.md5(body.encode()).hexdigest() == remote_md5
    assert _served(warm) == 1


def test_a_changed_host_key_is_refused_warm_as_cold(healthy3: Testbed,
                                                    warm: dict[str, str]) -> None:
    healthy3.tb("rekey", "node3")
    p = healthy3.dgx("exec", "--", "touch", "/tmp/ran-warm", env=warm)
    assert p.returncode == 3
    assert "HOST KEY CHANGED" in p.stderr and "node3" in p.stderr
    assert healthy3.node_exec("node3", "ls", "/tmp/ran-warm", check=False).returncode != 0
    assert _served(warm) == 1
