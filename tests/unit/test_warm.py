"""The warm server (`dgxcluster warm`, cli/warm.py and cli/warmserver.py), run for real: a
server process on a temporary socket, the real console entry as its client.

What a command does must not depend on whether it ran warm or cold: output, exit code,
program name, signals (Ctrl-C, SIGTERM, ignored SIGINT) and what dies with a killed client.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dgxcluster.cli.warm import package_root, read_line, send_line
from dgxcluster.cli.warmserver import code_stamp
from tests import children, scripts_path  # noqa: F401 - puts scripts/ on sys.path
from tests.conftest import REPO, run_cli

from testbed_lib.systemd import children_by_parent  # isort: skip


@pytest.fixture
def warm(tmp_path: Path) -> Iterator[dict[str, str]]:
    """A warm server of this checkout on its own socket; the env that makes commands use it."""
    sock = tmp_path / "w" / "warm.sock"
    env = {"DGXCLUSTER_WARM_SOCKET": str(sock)}
    p = run_cli("warm", "start", "--idle", "10m", env=env, timeout=120)
    assert p.returncode == 0, p.stderr
    yield env
    pid = _status(env).get("pid")
    run_cli("warm", "stop", env=env, timeout=60)
    if pid:
        _wait_gone(int(pid))


def _status(env: dict[str, str]) -> dict[str, object]:
    p = run_cli("warm", "status", "--json", env=env, timeout=60)
    assert p.returncode == 0, p.stderr
    doc: dict[str, object] = json.loads(p.stdout)
    return doc


def _served(env: dict[str, str]) -> int:
    return int(str(_status(env)["served"]))


def _wait_gone(pid: int, within_s: float = 10) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


def test_start_is_idempotent_and_status_names_this_checkout(warm: dict[str, str]) -> None:
    again = run_cli("warm", "start", env=warm, timeout=60)
    assert again.returncode == 0, again.stderr
    assert again.stdout.startswith("warm server unchanged: pid ")
    doc = _status(warm)
    assert doc["running"] is True and doc["used_here"] is True
    assert doc["root"] == package_root()
    assert int(str(doc["modules"])) > 100  # everything imported ahead


@pytest.mark.parametrize("args", [
    ["--version"],
    ["--help"],
    ["status", "--help"],
    ["status", "--bogus"],
    ["-i", "/nonexistent/inv.yaml", "status"],
    ["recipe", "ls", "--json"],
])
def test_warm_and_cold_print_the_same_and_exit_the_same(warm: dict[str, str],
                                                        args: list[str]) -> None:
    before = _served(warm)
    hot = run_cli(*args, env=warm, timeout=60)
    cold = run_cli(*args, timeout=60)
    assert _served(warm) == before + 1  # the warm one really ran in the server's worker
    assert (hot.returncode, hot.stdout, hot.stderr) == (cold.returncode, cold.stdout, cold.stderr)
    assert "warmserver" not in hot.stdout + hot.stderr  # named as the client was: no leak


def test_stdin_reaches_the_worker(warm: dict[str, str], tmp_path: Path) -> None:
    """`-i -` is not a thing; `recipe import -` reads stdin: the worker reads the client's."""
    p = run_cli("-i", "/dev/stdin", "status", "--json", env=warm, timeout=60,
                input="nodes: [{name: n1, host: 192.0.2.1, fabric_ip: 192.0.2.1}]\nbogus: 1\n")
    cold = run_cli("-i", "/dev/stdin", "status", "--json", timeout=60,
                   input="nodes: [{name: n1, host: 192.0.2.1, fabric_ip: 192.0.2.1}]\nbogus: 1\n")
    assert p.returncode == cold.returncode == 2
    assert "bogus" in p.stderr and p.stderr == cold.stderr


def _silent_listener() -> socket.socket:
    """A TCP port that accepts and never says a word: an SSH client waits there for a banner."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    return srv


def _hanging_inventory(tmp_path: Path, port: int) -> Path:
    inv = tmp_path / "inv.yaml"
    inv.write_text(f"nodes:\n  - {{name: n1, host: 127.0.0.1, port: {port}, fabric_ip: 10.9.0.1}}\n"
                   "ssh: {connect_timeout: 90}\n")
    return inv


def _spawn(args: list[str], env: dict[str, str], **popen: object) -> subprocess.Popen[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("DGXCLUSTER_")}
    full["DGXCLUSTER_WARM_SOCKET"] = ""
    full.update(env)
    return children.spawn([sys.executable, "-m", "dgxcluster", *args], env=full, cwd=REPO,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


def _wait_for_connection(srv: socket.socket, within_s: float = 60) -> socket.socket:
    srv.settimeout(within_s)
    conn, _ = srv.accept()
    return conn


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_to_the_client_stops_the_command_as_it_stops_a_cold_one(
        warm: dict[str, str], tmp_path: Path, sig: signal.Signals) -> None:
    srv = _silent_listener()
    inv = _hanging_inventory(tmp_path, srv.getsockname()[1])
    results = []
    for env in (warm, {}):
        proc = _spawn(["-i", str(inv), "exec", "--", "true"], env)
        conn = _wait_for_connection(srv)  # the command is waiting for the SSH banner
        proc.send_signal(sig)
        time.sleep(1)
        conn.close()  # the connecting thread ends (a cold start waits for it too)
        out, err = proc.communicate(timeout=60)
        results.append((proc.returncode, out, err))
    srv.close()
    hot, cold = results
    assert hot == cold
    if sig == signal.SIGINT:  # KeyboardInterrupt: exec says so and exits 130
        assert hot[0] == 130 and "interrupted" in hot[2]
    else:  # exec leaves SIGTERM at its default: the client dies of it, as the worker did
        assert hot[0] == -sig


def test_an_ignored_sigint_stays_ignored_as_for_a_cold_start(warm: dict[str, str],
                                                             tmp_path: Path) -> None:
    """A background job of a non-interactive shell starts with SIGINT ignored; the command
    keeps it so, warm or cold: SIGINT does nothing, SIGTERM (its default for exec) ends it."""
    srv = _silent_listener()
    inv = _hanging_inventory(tmp_path, srv.getsockname()[1])
    for env in (warm, {}):
        full = {k: v for k, v in os.environ.items() if not k.startswith("DGXCLUSTER_")}
        full.update({"DGXCLUSTER_WARM_SOCKET": "", **env})
        proc = subprocess.Popen(
            ["env", "--ignore-signal=INT", sys.executable, "-m", "dgxcluster", "-i", str(inv),
             "exec", "--", "true"], env=full, cwd=REPO, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
        try:
            conn = _wait_for_connection(srv)
            os.killpg(proc.pid, signal.SIGINT)
            with pytest.raises(subprocess.TimeoutExpired):
                proc.wait(timeout=2)
            proc.terminate()
            time.sleep(1)
            conn.close()
            assert proc.wait(timeout=60) == -signal.SIGTERM, env
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    srv.close()


def _workers_of(server_pid: int) -> list[int]:
    """Processes forked by the server (waiters) and by them (workers)."""
    kids = children_by_parent()
    waiters = kids.get(server_pid, [])
    return waiters + [w for p in waiters for w in kids.get(p, [])]


def test_a_killed_client_takes_its_command_with_it(warm: dict[str, str],
                                                   tmp_path: Path) -> None:
    srv = _silent_listener()
    inv = _hanging_inventory(tmp_path, srv.getsockname()[1])
    server_pid = int(str(_status(warm)["pid"]))
    proc = _spawn(["-i", str(inv), "exec", "--", "true"], warm)
    conn = _wait_for_connection(srv)
    assert len(_workers_of(server_pid)) == 2  # its waiter and its worker
    proc.kill()
    proc.communicate(timeout=30)
    deadline = time.monotonic() + 10
    while _workers_of(server_pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _workers_of(server_pid) == []
    conn.close()
    srv.close()


def test_another_checkout_or_changed_code_is_declined(warm: dict[str, str]) -> None:
    path = warm["DGXCLUSTER_WARM_SOCKET"]
    sock = socket.socket(socket.AF_UNIX)
    sock.connect(path)
    send_line(sock, {"op": "run", "argv": ["dgxcluster", "--version"], "root": "/elsewhere",
                     "executable": sys.executable}, [0, 1, 2])
    assert read_line(sock) == {"declined": "another checkout or interpreter"}
    sock.close()
    assert _status(warm)["running"] is True  # declining another checkout does not stop it


def test_code_stamp_changes_with_any_edit_or_new_file(tmp_path: Path) -> None:
    (tmp_path / "a.py").write_text("x = 1\n")
    first = code_stamp(str(tmp_path))
    (tmp_path / "notes.txt").write_text("not code")
    assert code_stamp(str(tmp_path)) == first
    os.utime(tmp_path / "a.py", ns=(first[1] + 10**9, first[1] + 10**9))
    second = code_stamp(str(tmp_path))
    assert second != first
    (tmp_path / "b.py").write_text("")
    assert code_stamp(str(tmp_path))[0] == second[0] + 1


def test_only_its_own_user_can_reach_it(warm: dict[str, str]) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to act as another user")
    path = warm["DGXCLUSTER_WARM_SOCKET"]
    assert os.stat(os.path.dirname(path)).st_mode & 0o777 == 0o700
    pid = os.fork()
    if pid == 0:  # as nobody: the 0700 directory keeps it out
        code = 1
        try:
            os.setuid(65534)
            socket.socket(socket.AF_UNIX).connect(path)
        except PermissionError:
            code = 0
        finally:
            os._exit(code)
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0


def test_a_shared_socket_directory_is_refused(tmp_path: Path) -> None:
    shared = tmp_path / "open"
    shared.mkdir(mode=0o755)
    os.chmod(shared, 0o755)
    p = run_cli("warm", "start", env={"DGXCLUSTER_WARM_SOCKET": str(shared / "warm.sock")},
                timeout=60)
    assert p.returncode == 1
    assert p.stderr.startswith(f"error: warm server: {shared}: must be owned by uid")
    assert "mode 0700" in p.stderr and "Traceback" not in p.stderr
    assert not (shared / "warm.sock").exists()


def test_secrets_in_the_environment_reach_the_worker_and_no_log(warm: dict[str, str]) -> None:
    token = "hf_" + "Q" * 34
    p = run_cli("--version", env={**warm, "HF_TOKEN": token}, timeout=60)
    assert p.returncode == 0
    log = Path(warm["DGXCLUSTER_WARM_SOCKET"]).with_name("warm.log")
    assert token not in log.read_text()
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True)
    assert token not in ps.stdout


def test_stop_then_commands_run_cold(warm: dict[str, str]) -> None:
    stop = run_cli("warm", "stop", "--json", env=warm, timeout=60)
    assert stop.returncode == 0 and json.loads(stop.stdout)["status"] == "changed"
    assert not Path(warm["DGXCLUSTER_WARM_SOCKET"]).exists()
    p = run_cli("--version", env=warm, timeout=60)
    assert p.returncode == 0 and p.stdout.startswith("dgxcluster ")
    again = run_cli("warm", "stop", env=warm, timeout=60)
    assert again.returncode == 0 and again.stdout.startswith("no warm server at ")


def test_bad_idle_is_refused_naming_the_option(tmp_path: Path) -> None:
    p = run_cli("warm", "start", "--idle", "10", timeout=60,
                env={"DGXCLUSTER_WARM_SOCKET": str(tmp_path / "w" / "warm.sock")})
    assert p.returncode == 2
    assert p.stderr.startswith("error: --idle: ") and "Traceback" not in p.stderr


@pytest.mark.parametrize("junk", [b"\x00\x00\x00\x05\xff\xfe\xfd\xfc\xfb", b"GET / HTTP/1.0\r\n\r\n",
                                  b"\xff\xff\xff\xff", b""])
def test_junk_on_the_socket_leaves_the_server_serving(warm: dict[str, str], junk: bytes) -> None:
    sock = socket.socket(socket.AF_UNIX)
    sock.connect(warm["DGXCLUSTER_WARM_SOCKET"])
    sock.sendall(junk)
    sock.shutdown(socket.SHUT_WR)
    sock.settimeout(30)
    assert sock.recv(100) == b""  # closed without an answer
    sock.close()
    before = _served(warm)
    p = run_cli("--version", env=warm, timeout=60)
    assert p.returncode == 0 and _served(warm) == before + 1


def test_the_default_socket_lives_in_its_own_0700_directory(tmp_path: Path) -> None:
    """dgxcluster's cache directory is made with the umask's mode by other features (image
    content tags): the default socket must not need it to be 0700."""
    cache = tmp_path / "cache"
    (cache / "dgxcluster").mkdir(parents=True, mode=0o755)
    os.chmod(cache / "dgxcluster", 0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith("DGXCLUSTER_")}
    env["XDG_CACHE_HOME"] = str(cache)
    dgx = [sys.executable, "-m", "dgxcluster"]
    try:
        p = children.run([*dgx, "warm", "start"], env=env, cwd=REPO, timeout=120)
        assert p.returncode == 0, p.stderr
        sock = cache / "dgxcluster" / "warm" / "warm.sock"
        assert f"at {sock}," in p.stdout
        assert os.stat(sock.parent).st_mode & 0o777 == 0o700
    finally:
        children.run([*dgx, "warm", "stop"], env=env, cwd=REPO, timeout=60)
