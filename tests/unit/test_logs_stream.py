"""The node-side collection script and the operator-side demux, without any node.

The real script runs under the local `sh` (values as positional parameters, as on a
node); its stream goes through the same Inflater/Demux/NodeFolder path `logs` uses.
"""

from __future__ import annotations

import gzip
import io
import re
import subprocess
import tarfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dgxcluster.logs.items import NodeFolder
from dgxcluster.logs.script import COLLECT, collect_argv, new_boundary
from dgxcluster.logs.stream import Demux, Inflater, StreamError
from dgxcluster.secrets import CollectedRedactor

B = "@@dgxc-0123456789abcdef01234567"


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, ...]] = []
        self.bodies: dict[str, bytes] = {}
        self.errs: dict[str, bytes] = {}
        self._cur: tuple[str, str] | None = None

    def begin(self, name: str) -> None:
        self._cur = ("body", name)
        self.bodies.setdefault(name, b"")
        self.events.append(("begin", name))

    def body(self, data: bytes) -> None:
        assert self._cur is not None
        kind, name = self._cur
        target = self.bodies if kind == "body" else self.errs
        target[name] = target.get(name, b"") + data

    def stderr(self, name: str) -> None:
        self._cur = ("stderr", name)

    def end(self, name: str, exit_code: int, duration_ms: int) -> None:
        self.events.append(("end", name, str(exit_code)))
        self._cur = None

    def meta(self, key: str, value: str) -> None:
        self.events.append(("meta", key, value))

    def done(self) -> None:
        self.events.append(("done",))


def framed(items: list[tuple[str, bytes, bytes, int]]) -> bytes:
    out = b""
    for name, body, err, rc in items:
        out += f"\n{B} file {name}\n".encode() + body
        if err:
            out += f"\n{B} stderr {name}\n".encode() + err
        out += f"\n{B} end {name} {rc} 12\n".encode()
    return out + f"\n{B} done\n".encode()


ITEMS = [
    ("a.txt", b"line one\nline two\n", b"", 0),
    ("b.bin", bytes(range(256)) * 3 + b"\n" + B.encode()[:-1], b"warning\n", 0),
    ("c.txt", b"no newline at end", b"", 0),
    ("empty", b"", b"boom: not found", 127),
]


def test_demux_splits_items_exactly() -> None:
    rec = Recorder()
    Demux(B, rec).feed(framed(ITEMS))
    for name, body, err, _rc in ITEMS:
        assert rec.bodies[name] == body
        assert rec.errs.get(name, b"") == err
    assert ("end", "empty", "127") in rec.events
    assert rec.events[-1] == ("done",)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=97), min_size=1, max_size=40))
def test_any_chunking_of_a_gzip_stream_gives_the_same_items(cuts: list[int]) -> None:
    data = gzip.compress(framed(ITEMS))
    rec = Recorder()
    inflater = Inflater(Demux(B, rec))
    pos = 0
    for n in cuts:
        inflater.feed(data[pos : pos + n])
        pos += n
    inflater.feed(data[pos:])
    inflater.close()
    assert {k: v for k, v in rec.bodies.items()} == {n: b for n, b, _e, _r in ITEMS}
    assert rec.events[-1] == ("done",)


def test_raw_stream_without_gzip_passes_through() -> None:
    rec = Recorder()
    inflater = Inflater(Demux(B, rec))
    inflater.feed(framed(ITEMS))
    inflater.close()
    assert rec.bodies["a.txt"] == b"line one\nline two\n"


def test_corrupt_gzip_is_a_stream_error() -> None:
    inflater = Inflater(Demux(B, Recorder()))
    with pytest.raises(StreamError, match="corrupt"):
        inflater.feed(b"\x1f\x8b" + b"\xff" * 40)


def test_unknown_header_is_a_stream_error() -> None:
    with pytest.raises(StreamError, match="unknown header"):
        Demux(B, Recorder()).feed(f"\n{B} bogus x\n".encode())


def run_script_locally(tmp_path: Path, log_dir: Path, since_s: int = 0) -> bytes:
    """The real collection script under the local sh, with a PATH holding only coreutils."""
    argv = collect_argv(B, "nosuchcluster", str(log_dir), since_s, ["lo"], dmesg_lines=5)
    assert argv[:2] == ["sh", "-c"] and argv[2] == COLLECT
    proc = subprocess.run(argv, capture_output=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_local_run_of_the_script_frames_every_item(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    (logs / "sub").mkdir(parents=True)
    (logs / "vllm.log").write_text("INFO engine up\nHF_TOKEN=hf_abcdefghijklmnopqrstuvwxyz\n")
    (logs / "sub" / "x.log").write_text("x\n")
    stream = run_script_locally(tmp_path, logs)
    assert stream[:2] == b"\x1f\x8b"  # compressed on the node
    node = tmp_path / "bundle" / "n1"
    sink = NodeFolder(node, CollectedRedactor())
    inflater = Inflater(Demux(B, sink))
    inflater.feed(stream)
    inflater.close()
    sink.close()
    assert sink.complete
    names = set(sink.items)
    assert {"dgxcluster-logs.tar", "host/uname.txt", "host/ip-d-addr.txt", "host/ethtool-lo.txt",
            "host/df-h.txt", "host/free-m.txt", "host/dmesg-tail.txt",
            "host/nvidia-smi-q.txt", "host/ibv_devinfo-v.txt"} <= names
    assert (node / "host" / "uname.txt").read_text().startswith("Linux")
    assert sink.items["host/uname.txt"].exit_code == 0
    vllm = (node / "dgxcluster" / "vllm.log").read_text()
    assert "INFO engine up" in vllm and "hf_abcdefghij" not in vllm
    assert (node / "dgxcluster" / "sub" / "x.log").read_text() == "x\n"
    assert "meta" not in names and sink.node_facts["now"].isdigit()


def test_missing_log_dir_is_recorded_not_fatal(tmp_path: Path) -> None:
    stream = run_script_locally(tmp_path, tmp_path / "absent")
    sink = NodeFolder(tmp_path / "n", CollectedRedactor())
    inflater = Inflater(Demux(B, sink))
    inflater.feed(stream)
    inflater.close()
    rec = sink.items["dgxcluster-logs.tar"]
    assert rec.exit_code == 1
    assert rec.error is not None and "no directory" in rec.error
    assert sink.items["host/uname.txt"].exit_code == 0  # the rest still came


def test_since_filters_old_files_on_the_node(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "old.log").write_text("old\n")
    (logs / "new.log").write_text("new\n")
    import os

    os.utime(logs / "old.log", (1_000_000_000, 1_000_000_000))
    stream = run_script_locally(tmp_path, logs, since_s=3600)
    sink = NodeFolder(tmp_path / "n", CollectedRedactor())
    inflater = Inflater(Demux(B, sink))
    inflater.feed(stream)
    inflater.close()
    assert (tmp_path / "n" / "dgxcluster" / "new.log").exists()
    assert not (tmp_path / "n" / "dgxcluster" / "old.log").exists()


def test_script_writes_nothing_on_the_node() -> None:
    """Only /dev/null and file descriptors are ever redirected to; nothing creates files."""
    for forbidden in ("mktemp", "tee ", "mkfifo", "touch ", ">>"):
        assert forbidden not in COLLECT
    targets = re.findall(r"(?<![0-9&<])>\s*([^&\s][^\s;)]*)", COLLECT)
    assert set(targets) <= {"/dev/null"}, targets


def test_values_travel_as_parameters_not_script_text() -> None:
    hostile = "$(touch /tmp/pwned); `id`"
    argv = collect_argv(new_boundary(), hostile, hostile, 0, [hostile])
    assert argv[2] == COLLECT
    assert hostile in argv[3:]


def test_unpacked_tar_never_leaves_its_folder(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in (("logs/ok.log", b"fine\n"), ("../escape.log", b"bad\n"),
                           ("/abs.log", b"bad\n")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("logs/link")
        link.type = tarfile.SYMTYPE
        link.linkname = "/etc/passwd"
        tar.addfile(link)
    stream = (f"\n{B} file containers/c1/ray-logs.tar\n".encode() + buf.getvalue()
              + f"\n{B} end containers/c1/ray-logs.tar 0 5\n{B} done\n".encode())
    node = tmp_path / "bundle" / "n"
    sink = NodeFolder(node, CollectedRedactor())
    Demux(B, sink).feed(stream)
    sink.close()
    assert (node / "containers" / "c1" / "ray" / "ok.log").read_bytes() == b"fine\n"
    assert not (tmp_path / "bundle" / "escape.log").exists()
    assert not list(tmp_path.rglob("abs.log"))
    assert not list(tmp_path.rglob("link"))
    notes = " ".join(sink.items["containers/c1/ray-logs.tar"].notes)
    assert "unsafe path" in notes and "not a regular file" in notes


def test_docker_missing_or_down_is_one_recorded_item(tmp_path: Path) -> None:
    """A node whose docker cannot be used still gives its host facts."""
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    docker = fake_bin / "docker"  # stands for a docker CLI whose daemon is down
    docker.write_text("#!/bin/sh\necho 'Cannot connect to the Docker daemon at "
                      "unix:///var/run/docker.sock. Is the docker daemon running?' >&2\nexit 1\n")
    docker.chmod(0o755)
    argv = collect_argv(B, "c", str(tmp_path / "absent"), 0, [], dmesg_lines=5)
    import os

    env = {**os.environ, "PATH": f"{fake_bin}:{os.environ['PATH']}"}
    proc = subprocess.run(argv, capture_output=True, timeout=60, check=True, env=env)
    sink = NodeFolder(tmp_path / "n", CollectedRedactor())
    inflater = Inflater(Demux(B, sink))
    inflater.feed(proc.stdout)
    inflater.close()
    rec = sink.items["docker"]
    assert rec.exit_code == 1 and rec.error is not None
    assert "Cannot connect to the Docker daemon" in rec.error
    assert sink.complete and sink.items["host/uname.txt"].exit_code == 0
