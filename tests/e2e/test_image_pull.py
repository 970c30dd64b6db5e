"""`image.source: pull` on the 2-node docker testbed: real sshd, real dockerd per node, and a
real registry: Debian's `docker-registry` (distribution/distribution 2.8.2, the program
behind Docker Hub's `registry:2` image) runs inside node1 on 127.0.0.1, once open and once
behind htpasswd auth. dockerd treats `localhost:PORT` as an insecure registry by default, so
`docker pull localhost:5000/...` on node1 is the same code path as `docker pull nvcr.io/...`
on a Spark, minus TLS. node2 cannot reach node1's loopback: it only gets the image the way
every receiver does, `docker save` streamed into its `docker load`.

The registry binary comes from the Debian archive (`apt-get download`, cached under
/var/cache/dgxtb like the testbed's wheels); where that cannot be fetched the module skips.
The image is small: the testbed base plus one file (`docker commit`), pushed once.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from dgxcluster.core.imageid import pull_tag
from tests.conftest import TESTBED, Testbed

pytestmark = [pytest.mark.e2e, pytest.mark.docker]

CACHE = Path("/var/cache/dgxtb/docker-registry")
NAME = "dgxcluster/pulltest"  # not the testbed image: other modules start dgxcluster/testbed
REF = "localhost:5000/k/pulltest:1"
AUTH_REF = "localhost:5002/k/pulltest:1"
PASSWORD = "k-Registry-Pw-8c41"  # a test registry's password, looked for in output
REG = "/var/lib/dgxtb-registry"

_START = r"""dir=$1 port=$2 auth=$3
mkdir -p "$dir/data"
{ printf 'version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: %s/data\n' "$dir"
  printf 'http:\n  addr: 127.0.0.1:%s\n' "$port"
  [ -z "$auth" ] || printf 'auth:\n  htpasswd:\n    realm: dgxtb\n    path: %s/htpasswd\n' "$dir"
} > "$dir/config-$port.yml"
[ -z "$auth" ] || printf '%s\n' "$auth" > "$dir/htpasswd"
setsid "$dir/docker-registry" serve "$dir/config-$port.yml" > "$dir/log-$port" 2>&1 &
echo $! > "$dir/pid-$port"
for _ in $(seq 50); do
  curl -s -o /dev/null "http://127.0.0.1:$port/v2/" && exit 0; sleep 0.1
done
cat "$dir/log-$port" >&2; exit 1
"""


def _registry_binary() -> Path:
    """Debian's docker-registry, fetched once (the package archive is reachable; a registry
    image would need Docker Hub)."""
    binary = CACHE / "docker-registry"
    if binary.exists():
        return binary
    CACHE.mkdir(parents=True, exist_ok=True)
    got = subprocess.run(["apt-get", "download", "docker-registry"], cwd=CACHE,
                         capture_output=True, text=True, timeout=300, check=False)
    debs = sorted(CACHE.glob("docker-registry_*.deb"))
    if got.returncode != 0 or not debs:
        pytest.skip(f"docker-registry not available from apt: {got.stderr.strip()[-300:]}")
    subprocess.run(["dpkg-deb", "-x", str(debs[-1]), str(CACHE / "root")], check=True)
    (CACHE / "root" / "usr" / "bin" / "docker-registry").rename(binary)
    return binary


def _exec(tb: Testbed, node: str, script: str, *args: str, stdin: Path | None = None
          ) -> subprocess.CompletedProcess[str]:
    with open(stdin, "rb") if stdin else open("/dev/null", "rb") as fh:
        p = subprocess.run([str(TESTBED), "--name", tb.name, "exec", node, "--", "sh", "-c",
                            script, "sh", *args], stdin=fh, capture_output=True, timeout=300,
                           check=False)
    return subprocess.CompletedProcess(p.args, p.returncode, p.stdout.decode(), p.stderr.decode())


@pytest.fixture(scope="module")
def registry(testbed_docker: Testbed) -> Iterator[Testbed]:
    """Two registries in node1 (open on 5000, htpasswd on 5002, one storage) holding REF."""
    import bcrypt  # paramiko's dependency: the htpasswd line docker-registry accepts

    tb = testbed_docker
    binary = _registry_binary()
    p = _exec(tb, "node1", f'mkdir -p {REG} && cat > {REG}/docker-registry && '
              f'chmod +x {REG}/docker-registry', stdin=binary)
    assert p.returncode == 0, p.stderr
    line = "kuser:" + bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt()).decode()
    for port, auth in (("5000", ""), ("5002", line)):
        p = _exec(tb, "node1", _START, REG, port, auth)
        assert p.returncode == 0, p.stderr
    p = _exec(tb, "node1", "docker rm -f dgxtb-mk >/dev/null 2>&1; "
              "docker run --name dgxtb-mk dgxcluster/testbed-base:bookworm sh -c "
              "'echo image.source pull e2e > /etc/dgxtb-pulltest' && docker commit dgxtb-mk \"$1\" "
              "&& docker rm dgxtb-mk && docker push \"$1\" && docker rmi \"$1\"", REF)
    assert p.returncode == 0, p.stderr + p.stdout
    yield tb
    for port in ("5000", "5002"):
        _exec(tb, "node1", f'kill "$(cat {REG}/pid-{port})"')
    for node in tb.nodes:
        _exec(tb, node, 'docker rmi -f $(docker images -q "$1" | sort -u) "$2" "$3" "$4" '
              '>/dev/null 2>&1; rm -f "$5"; true', NAME, REF, AUTH_REF, "localhost:5999/k/onlyhere:1",
              f"/root/.local/state/dgxcluster/{tb.name}/records/image-dgxcluster_pulltest.json")
    _exec(tb, "node1", f"rm -rf {REG}")


def _inventory(tb: Testbed, tmp: Path, ref: str, login: bool = False) -> Path:
    """The testbed's inventory with image.source: pull (and image.login)."""
    text = tb.inventory.read_text().replace(
        "  name: dgxcluster/testbed\n  context: ../images/testbed\n",
        f"  name: {NAME}\n  source: pull\n  ref: {ref}\n  strategy: distribute\n"
        + ("  login: {user: kuser, password_secret: DGXTB_REGISTRY_PW}\n" if login else ""))
    assert f"ref: {ref}" in text
    text = text.replace(f"known_hosts: {tb.known_hosts.name}", f"known_hosts: {tb.known_hosts}")
    inv = tmp / "inv.yaml"
    inv.write_text(text)
    return inv


def _build(inv: Path, tmp: Path, *args: str, env: dict[str, str] | None = None,
           verbose: bool = False) -> tuple[subprocess.CompletedProcess[str], dict[str, object]]:
    from tests.conftest import run_cli

    p = run_cli(*(["-v"] if verbose else []), "-i", str(inv), "build", "--all-nodes", "--json",
                *args,
                env={"DGXCLUSTER_LOG_DIR": str(tmp / "logs"), **(env or {})})
    return p, (json.loads(p.stdout) if p.stdout.strip().startswith("{") else {})


def _rows(data: dict[str, object]) -> dict[str, str]:
    nodes = data["nodes"]
    assert isinstance(nodes, list)
    return {n["node"]: f"{n['step']} {n['status']} {n['detail']}" for n in nodes}


def _ids(tb: Testbed, *refs: str) -> dict[str, list[str]]:
    """node -> the image ID under each ref ("" where absent)."""
    out = {}
    for node in tb.nodes:
        p = _exec(tb, node, 'for r; do docker image inspect --format "{{.Id}}" "$r" 2>/dev/null '
                  '|| echo; done', *refs)
        out[node] = [ln.strip() for ln in p.stdout.splitlines()]
    return out


def _record(tb: Testbed, node: str) -> dict[str, str]:
    path = f"/root/.local/state/dgxcluster/{tb.name}/records/image-dgxcluster_pulltest.json"
    rec: dict[str, str] = json.loads(_exec(tb, node, 'cat "$1"', path).stdout)
    return rec


def _forget(tb: Testbed) -> None:
    """No node holds the image under any name (the layers of the base stay)."""
    for node in tb.nodes:
        _exec(tb, node, 'docker rmi -f $(docker images -q "$1" | sort -u) "$2" "$3" >/dev/null '
              '2>&1; true', NAME, REF, "localhost:5999/k/onlyhere:1")


def test_pull_on_one_node_and_ship_it_to_the_other(registry: Testbed, tmp_path: Path) -> None:
    tb = registry
    _forget(tb)
    inv = _inventory(tb, tmp_path, REF)
    p, data = _build(inv, tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    rows = _rows(data)
    assert rows["node1"].startswith(f"pull changed pulled {REF} in ")
    assert "(downloaded; 2 layer(s), 1 already here); no Ray in this image" in rows["node1"]
    assert rows["node2"].startswith("receive changed received from node1")
    want = f"{NAME}:{pull_tag(REF)}"
    ids = _ids(tb, want, f"{NAME}:current", REF)
    image_id = ids["node1"][0]
    assert image_id.startswith("sha256:")
    assert ids == {"node1": [image_id] * 3, "node2": [image_id] * 3}
    # the digest is the registry's (docker push printed it), kept although docker load drops it
    digest = _exec(tb, "node1", "docker image inspect --format '{{index .RepoDigests 0}}' \"$1\"",
                   REF).stdout.strip()
    assert data["digest"] == digest and digest.startswith("localhost:5000/k/pulltest@sha256:")
    for node, how in (("node1", "pulled"), ("node2", "received")):
        rec = _record(tb, node)
        assert (rec["image_id"], rec["how"], rec["source"], rec["ref"], rec["digest"], rec["ray"]) \
            == (image_id, how, "node1", REF, digest, "")
    assert data["ray"] == "" and "has no Ray" in " ".join(data["notes"])  # type: ignore[arg-type]

    # second run: compare first, act on nothing
    p, data = _build(inv, tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    assert _rows(data) == {"node1": "check unchanged up to date",
                           "node2": "check unchanged up to date"}

    # status reads the pulled tag on every node as the image image.ref gives
    from tests.conftest import run_cli

    st = run_cli("-i", str(inv), "status", "--json")
    image = json.loads(st.stdout)["image"]
    assert (image["expected_tag"], image["consistent"], image["matches_expected"]) == (
        pull_tag(REF), True, True), image

    # start refuses an image without Ray in its preflight, before anything runs
    st = run_cli("-i", str(inv), "start", "--skip-model-check")
    assert st.returncode == 1, st.stdout + st.stderr
    assert f"{REF} has no Ray" in " ".join(st.stderr.split())
    for node in tb.nodes:  # (the registries are node1's processes: not a leak check here)
        assert _exec(tb, node, "docker ps -aq").stdout.strip() == "", node


def test_an_image_held_by_one_node_only_is_sent_from_that_node(
        registry: Testbed, tmp_path: Path) -> None:
    """No registry is reachable for this reference: node2 holds it, so nothing is pulled."""
    tb = registry
    _forget(tb)
    only = "localhost:5999/k/onlyhere:1"
    made = _exec(tb, "node2", 'docker rm -f dgxtb-mk2 >/dev/null 2>&1; docker run --name dgxtb-mk2 '
                 'dgxcluster/testbed-base:bookworm true && docker commit --change '
                 '\'ENTRYPOINT ["vllm", "serve"]\' dgxtb-mk2 "$1" >/dev/null '
                 '&& docker rm dgxtb-mk2 >/dev/null && docker image inspect --format "{{.Id}}" "$1"',
                 only)
    assert made.returncode == 0, made.stderr
    image_id = made.stdout.strip()
    p, data = _build(_inventory(tb, tmp_path, only), tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    rows = _rows(data)
    assert rows["node2"].startswith(f"tag changed found {only} here; tagged; no Ray in this image")
    assert rows["node1"].startswith("receive changed received from node2")
    assert data["source"] == "node2"
    assert f"node2 already holds {only}; sending it from there" in data["notes"]  # type: ignore[operator]
    # vllm/vllm-openai's ENTRYPOINT would swallow start's `ray start ...`: build says so
    assert f'{only}\'s ENTRYPOINT is ["vllm", "serve"]: `start` passes `ray start ...`' in \
        " ".join(data["notes"])  # type: ignore[arg-type]
    ids = _ids(tb, f"{NAME}:{pull_tag(only)}", f"{NAME}:current", only)
    assert ids == {"node1": [image_id] * 3, "node2": [image_id] * 3}


def test_a_failed_pull_gives_the_daemons_reason_and_changes_nothing(
        registry: Testbed, tmp_path: Path) -> None:
    tb = registry
    before = _ids(tb, f"{NAME}:current")
    p, data = _build(_inventory(tb, tmp_path, "localhost:5000/k/nothere:1"), tmp_path)
    assert p.returncode == 1, p.stderr[-3000:]
    rows = _rows(data)
    assert rows["node1"] == ("pull failed pull failed: Error response from daemon: manifest for "
                             "localhost:5000/k/nothere:1 not found: manifest unknown: manifest "
                             "unknown")
    assert rows["node2"] == "receive failed not received: the pull on node1 failed"
    assert _ids(tb, f"{NAME}:current") == before


def test_a_login_lives_only_for_its_pull_and_its_password_only_on_stdin(
        registry: Testbed, tmp_path: Path) -> None:
    tb = registry
    _forget(tb)
    inv = _inventory(tb, tmp_path, AUTH_REF, login=True)
    p, _ = _build(inv, tmp_path, env={"DGXTB_REGISTRY_PW": "wrong-password"})
    assert p.returncode == 1
    assert "401 Unauthorized" in p.stdout and "docker login localhost:5002 failed" in p.stdout

    p, data = _build(inv, tmp_path, env={"DGXTB_REGISTRY_PW": PASSWORD}, verbose=True)
    assert p.returncode == 0, p.stderr[-3000:]
    assert _rows(data)["node1"].startswith(f"pull changed pulled {AUTH_REF} in ")
    logs = "".join(f.read_text() for f in (tmp_path / "logs").rglob("*") if f.is_file())
    assert "logged in to localhost:5002 as kuser (for this pull only)" in logs
    for text in (p.stdout, p.stderr, logs):
        assert PASSWORD not in text
    # docker login wrote into a throw-away DOCKER_CONFIG: no credential stays on the node
    # ($HOME/.docker itself may exist: buildx keeps its .buildNodeID there after a build)
    left = _exec(tb, "node1", 'grep -rl kuser "$HOME/.docker" /tmp 2>/dev/null; true')
    assert left.stdout.strip() == ""

    p, _ = _build(inv, tmp_path, env={})
    assert p.returncode == 0  # up to date: nothing to pull, so no password needed
