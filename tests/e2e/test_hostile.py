"""Hostile values that validation lets through reach the node literally (tests/hostile.py;
which are refused is tests/unit/test_hostile_values.py).

Proof is read from the processes themselves (the nodes share the host's PID namespace):
`/proc/PID/cmdline` of the vLLM stand-in holds each value as exactly one argv element,
byte for byte, and `/proc/PID/environ` holds each `container.env` value exactly. No
marker file that a smuggled command would create exists, on the nodes or in the
containers.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import httpx
import pytest
import yaml

from tests.conftest import Testbed, run_cli
from tests.hostile import HOSTILE, markers
from tests.leaks import assert_no_leaks

pytestmark = [pytest.mark.e2e, pytest.mark.docker]

TOKEN = "hf_hostileSecretsFile0123456789abcdef"
#: The node-side state dir, with a space, `;`, `$()`, backticks, quotes and non-ASCII.
STATE_DIR = "/root/dgxc state;$(touch /tmp/dgxc-pwned-state) `touch /tmp/dgxc-pwned-state2` 'q\" ü"
MODEL = "dgxc/hostile-model; $(touch /tmp/dgxc-pwned-model) `touch /tmp/dgxc-pwned-model2`"
SERVED = "served 'q\" ü; $(touch /tmp/dgxc-pwned-served) `touch /tmp/dgxc-pwned-served2` *"
#: Every hostile value as the value of a real `vllm serve` option that takes any string
#: (`--middleware`, repeatable): passed literally, as asked. (A bare hostile value is refused
#: by vLLM's parser, and so by the stand-in, as an unrecognized argument.)
EXTRA = [f"--middleware={v}" for v in HOSTILE.values()]
ENV = {f"DGXC_HOSTILE_{k.upper().replace('-', '_')}": v for k, v in HOSTILE.items()
       if k != "newline"}  # a newline in container.env is refused by validation
LABEL = f"dgxc.hostile={HOSTILE['subst']} {HOSTILE['backticks']} {HOSTILE['quotes']} ü"
ALL_MARKERS = sorted(set(markers()) | set(re.findall(r"/tmp/dgxc-pwned-[a-z0-9]+",
                                                     STATE_DIR + MODEL + SERVED)))


def _no_markers(tb: Testbed, containers: list[tuple[str, str]] | None = None) -> None:
    check = 'for f in "$@"; do [ -e "$f" ] && echo "$f"; done; true'
    for node in tb.nodes:
        found = tb.node_exec(node, "sh", "-c", check, "sh", *ALL_MARKERS).stdout
        assert found == "", (node, found)
    for node, name in containers or []:
        found = tb.node_exec(node, "docker", "exec", name, "sh", "-c", check, "sh",
                             *ALL_MARKERS).stdout
        assert found == "", (node, name, found)


def test_exec_hostile_arguments_arrive_byte_for_byte(testbed_docker: Testbed) -> None:
    tb = testbed_docker
    values = list(HOSTILE.values())
    show = "import json, sys; sys.stdout.write(json.dumps(sys.argv[1:]))"
    p = tb.dgx("exec", "--json", "--", "python3", "-c", show, *values)
    assert p.returncode == 0, p.stderr
    rows = json.loads(p.stdout)
    assert [r["node"] for r in rows] == tb.nodes
    for r in rows:
        assert json.loads(r["stdout"]) == values
    _no_markers(tb)


@pytest.fixture
def hostile_inventory(testbed_docker: Testbed, tmp_path: Path) -> Path:
    tb = testbed_docker
    inv = tb.portable_doc()
    inv["state_dir"] = STATE_DIR
    inv["serve"].update({"model": MODEL, "served_model_name": SERVED, "extra_args": EXTRA})
    inv["container"]["env"] = {**ENV, "DGXCLUSTER_STANDIN_LOAD_S": "0"}
    inv["container"]["extra_args"] = ["--label", LABEL]
    secrets = tmp_path / "secrets.env"
    secrets.write_text(f"HF_TOKEN={TOKEN}\n")
    secrets.chmod(0o600)
    inv["secrets"] = {"file": str(secrets)}
    path = tmp_path / "hostile.yaml"
    path.write_text(yaml.safe_dump(inv, allow_unicode=True))
    return path


def _proc(pid: int, what: str) -> list[bytes]:
    return Path(f"/proc/{pid}/{what}").read_bytes().split(b"\0")[:-1]


def test_hostile_inventory_values_reach_the_standin_and_its_container_literally(
        testbed_docker: Testbed, hostile_inventory: Path) -> None:
    tb = testbed_docker
    tb.ensure_image()
    tb.dgx("stop")
    env = {k: v for k, v in os.environ.items() if k != "HF_TOKEN"}  # the token: secrets.file only
    try:
        refused = run_cli("-i", str(hostile_inventory), "start", env=env)
        assert refused.returncode == 2 and "not a Hugging Face model id" in refused.stderr
        assert "serve.model" in refused.stderr and "Traceback" not in refused.stderr
        # not an id the model check could look for: served anyway, as written
        r = run_cli("-i", str(hostile_inventory), "start", "--skip-model-check", env=env,
                    timeout=600)
        assert r.returncode == 0, r.stderr[-4000:]
        assert TOKEN not in r.stdout + r.stderr
        head, worker = f"dgxc-{tb.name}-head", f"dgxc-{tb.name}-worker"
        # the stand-in's own argv: each value one element, byte for byte
        ps = tb.tb("ps", "node1").stdout
        pid = next(int(ln.split()[0]) for ln in ps.splitlines()
                   if re.match(r"^\d+ /opt/venv/bin/python\S* /usr/local/bin/vllm serve ", ln))
        argv = [a.decode() for a in _proc(pid, "cmdline")]
        assert argv[2:6] == ["serve", MODEL, "--served-model-name", SERVED]
        assert argv[-len(EXTRA):] == EXTRA
        assert argv[6:-len(EXTRA)] == ["--tensor-parallel-size", "2", "--distributed-executor-backend",
                                       "ray", "--host", "0.0.0.0", "--port", "8000",
                                       "--max-model-len", "4096",
                                       "--gpu-memory-utilization", "0.8"]  # the safe default
        # the container's environment (set at docker run): each value exact
        environ = {e.decode().split("=", 1)[0]: e.decode().split("=", 1)[1]
                   for e in _proc(pid, "environ")}
        for key, value in ENV.items():
            assert environ[key] == value, key
        assert "HF_TOKEN" in environ  # from the 0600 env-file (secrets.file), not argv
        label = tb.node_exec("node1", "docker", "inspect", "-f",
                             '{{index .Config.Labels "dgxc.hostile"}}', head).stdout
        assert label == LABEL.split("=", 1)[1] + "\n"
        # the literal state dir holds this cluster's files, the env-files 0600
        for node, role in (("node1", "head"), ("node2", "worker")):
            path = f"{STATE_DIR}/{tb.name}/env/{role}.env"
            assert tb.node_exec(node, "stat", "-c", "%a", path).stdout.strip() == "600"
        assert "vLLM stand-in" in tb.node_exec("node1", "cat",
                                               f"{STATE_DIR}/{tb.name}/logs/vllm.log").stdout
        # the served name went through the API untouched
        url = re.search(r"^endpoint: (\S+)", r.stdout, re.M)
        assert url, r.stdout
        models = httpx.get(f"{url.group(1)}/models", timeout=30).json()
        assert [m["id"] for m in models["data"]] == [SERVED]
        _no_markers(tb, [("node1", head), ("node2", worker)])
        stop = run_cli("-i", str(hostile_inventory), "stop", env=env)
        assert stop.returncode == 0, stop.stderr
        assert_no_leaks(tb, state=STATE_DIR)
        _no_markers(tb)
    finally:
        run_cli("-i", str(hostile_inventory), "stop", env=env)
        for node in tb.nodes:
            tb.node_exec(node, "rm", "-rf", "--", STATE_DIR, check=False)
