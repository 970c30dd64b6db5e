"""`build` against fake nodes: what is run where, and what never leaves the operator."""

from __future__ import annotations

import io
import re
import tarfile
from pathlib import Path

import pytest

from dgxcluster.core.buildcontext import scan
from dgxcluster.core.progress import RecordingProgress
from dgxcluster.core.session import Session
from dgxcluster.core.steps import Status
from dgxcluster.image import dockercmd
from dgxcluster.image.run import build
from dgxcluster.inventory import parse_inventory
from tests.fakes import FakeConnection, Reply, Responder

TOKEN = "hf_NotARealTokenButSecret42"


def _inventory(ctx: Path, strategy: str = "each") -> str:
    return (f"cluster: c\nnodes:\n"
            f"  - {{name: n1, host: 10.0.0.1, fabric_ip: 192.0.2.1}}\n"
            f"  - {{name: n2, host: 10.0.0.2, fabric_ip: 192.0.2.2}}\n"
            f"image: {{name: t/img, context: {ctx}, strategy: {strategy}}}\n")


@pytest.fixture
def ctx(tmp_path: Path) -> Path:
    d = tmp_path / "ctx"
    d.mkdir()
    (d / "Dockerfile").write_text("FROM base\nRUN --mount=type=secret,id=HF_TOKEN true\n")
    return d


def _session(ctx: Path, fakes: dict[str, FakeConnection], strategy: str = "each",
             env: dict[str, str] | None = None) -> Session:
    inv = parse_inventory(_inventory(ctx, strategy), environ={})
    return Session.open(inv, factory=lambda spec: fakes[spec.name], environ=env or {},
                        log_dir=ctx.parent / "logs")


def _probe_reply(tag: str | None, current: str | None = None) -> Responder:
    """What the probe prints (see tests/fixtures/build/probe_*.txt for real captures)."""

    def reply(argv: list[str], _stdin: bytes | None) -> Reply:
        ref, moving = argv[4], argv[5]
        lines = ["home\t/home/u"]
        cur = current or tag
        if tag:
            lines.append(f"inspect\tsha256:{'a' * 64}\t{{\"dgxcluster.content-tag\":\"{tag}\"}}")
        if cur:
            lines.append(f"inspect\tsha256:{'a' * 64}\t{{\"dgxcluster.content-tag\":\"{cur}\"}}")
        if not tag:
            lines.append(f"inspect\tError: No such image: {ref}")
        if not cur:
            lines.append(f"inspect\tError: No such image: {moving}")
        lines.append(f"inspect-exit\t{0 if tag and cur else 1}")
        return Reply(stdout="\n".join(lines) + "\n")

    return reply


def test_noop_when_every_node_holds_the_tag(ctx: Path) -> None:
    tag = scan(ctx).content_tag
    fakes = {n: FakeConnection(n).on(re.escape("ref=$1 cur=$2"), _probe_reply(tag))
             for n in ("n1", "n2")}
    prog = RecordingProgress()
    with _session(ctx, fakes) as s:
        report = build(s, progress=prog)
    assert [n.status for n in report.nodes] == [Status.UNCHANGED, Status.UNCHANGED]
    assert all(n.detail == "up to date" for n in report.nodes)
    for f in fakes.values():
        assert len(f.calls) == 1  # the probe, nothing else
        assert not any("build" in a and "docker" in c for c in f.calls for a in c)
        assert f.stdins == [None]


def test_each_sends_context_builds_with_secret_file_and_records(ctx: Path) -> None:
    image_id = "sha256:" + "b" * 64

    def on_build(argv: list[str], stdin: bytes | None) -> Reply:
        return Reply(stdout=f"dgxcluster: context ready\n#1 [1/2] FROM base\n"
                            f"dgxcluster-image-id {image_id}\n")

    fakes = {}
    for n in ("n1", "n2"):
        fakes[n] = (FakeConnection(n)
                    .on(re.escape("ref=$1 cur=$2"), _probe_reply(None))
                    .on(re.escape("dir=$1 ndel=$2"), on_build)
                    .on(re.escape("ref=$1 cur=$2 want=$3"), Reply(stdout=f"image-id\t{image_id}\n")))
        # FakeConnection matches the first rule: put the finalize rule first
        fakes[n].rules.insert(0, fakes[n].rules.pop())
    with _session(ctx, fakes, env={"HF_TOKEN": TOKEN}) as s:
        report = build(s)
    assert [n.status for n in report.nodes] == [Status.CHANGED, Status.CHANGED]
    for f in fakes.values():
        build_call = next(c for c in f.calls if "docker" in c and "build" in c)
        secret_arg = build_call[build_call.index("--secret") + 1]
        assert re.fullmatch(r"id=HF_TOKEN,src=/home/u/\.local/state/dgxcluster/c/env/"
                            r"build-[\w.-]+-[0-9a-f]{12}/HF_TOKEN", secret_arg)
        assert all(TOKEN not in a for c in f.calls for a in c)
        [(path, data)] = f.files.items()
        assert data == TOKEN.encode() and f.modes[path] == 0o600
        assert secret_arg.endswith(path)
        tar_in = f.stdins[f.calls.index(build_call)]
        assert tar_in is not None
        with tarfile.open(fileobj=io.BytesIO(tar_in)) as tar:
            assert tar.getnames() == ["context/Dockerfile", "manifest.json"]
        fin = f.calls[-1]
        assert fin[:3] == ["sh", "-c", dockercmd.FINALIZE]
        record = f.stdins[-1]
        assert record is not None and image_id.encode() in record and TOKEN.encode() not in record


def test_build_args_never_carry_secrets(ctx: Path) -> None:
    argv = dockercmd.build_argv(context_dir="/c", dockerfile="Dockerfile", tags=["a:b"],
                                labels={"l": "v"}, build_args={"X": "1"},
                                secret_files={"HF_TOKEN": "/s/HF_TOKEN"},
                                cache_from=["a:current"])
    assert argv[:3] == ["env", "DOCKER_BUILDKIT=1", "docker"]
    assert "--secret" in argv and "id=HF_TOKEN,src=/s/HF_TOKEN" in argv
    assert "HF_TOKEN=" not in " ".join(argv)
    assert argv[argv.index("--cache-from") + 1] == "a:current"
    assert argv[-1] == "/c"


def test_step_lines_become_statuses() -> None:
    assert dockercmd.step_of("#7 [builder 2/5] RUN make") == "step 2/5: RUN make"
    assert dockercmd.step_of("Step 3/6 : COPY . /app") == "step 3/6: COPY . /app"
    assert dockercmd.step_of("#5 [internal] load metadata") is None
    assert dockercmd.is_noise("#4 sha256:" + "c" * 64)
    assert not dockercmd.is_noise("#4 DONE 0.1s")



def test_unforeseen_error_on_one_node_fails_that_node_only(ctx: Path) -> None:
    image_id = "sha256:" + "c" * 64
    ok_build = Reply(stdout=f"dgxcluster: context ready\ndgxcluster-image-id {image_id}\n")
    fakes = {}
    for n in ("n1", "n2"):
        fakes[n] = (FakeConnection(n)
                    .on(re.escape("ref=$1 cur=$2 want=$3"), Reply(stdout=f"image-id\t{image_id}\n"))
                    .on(re.escape("ref=$1 cur=$2"), _probe_reply(None))
                    .on(re.escape("dir=$1 ndel=$2"),
                        ok_build if n == "n1" else Reply(raises=RuntimeError("boom"))))
    with _session(ctx, fakes) as s:
        report = build(s)
    by_node = {n.node: n for n in report.nodes}
    assert by_node["n1"].status is Status.CHANGED and by_node["n1"].data["image_id"] == image_id
    assert by_node["n2"].status is Status.FAILED and "boom" in by_node["n2"].detail


def test_a_changed_host_key_refuses_the_whole_build_before_anything_runs(ctx: Path) -> None:
    """Unlike a node that is down, a host key that does not match is a security question:
    the build stops before sending or building anything on any node."""
    from dgxcluster.errors import HostKeyError, NodesFailed

    fakes = {"n1": FakeConnection("n1").on("probe|sh -c", _probe_reply(None)),
             "n2": FakeConnection("n2").on("", Reply(raises=HostKeyError("n2", "HOST KEY CHANGED")))}
    with pytest.raises(NodesFailed) as info:
        build(_session(ctx, fakes))
    assert isinstance(info.value.errors["n2"], HostKeyError)
    assert "HOST KEY CHANGED" in str(info.value) and info.value.unreachable == ["n2"]
    assert len(fakes["n1"].calls) == 1  # the read-only probe; nothing sent, nothing built
    assert fakes["n1"].files == {} and fakes["n1"].stdins == [None]


def test_distribute_builds_once_ships_then_tags_every_node(
        ctx: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The DISTRIBUTE stage list: build on the build node, stream it to the other, then check
    the ID and move `current` on both (the relay's sockets are stood in for)."""
    from tests.unit.test_image_distribute import Relay

    image_id = "sha256:" + "d" * 64
    relay = Relay()
    monkeypatch.setattr("dgxcluster.core.relay.relay", relay)
    fakes = {}
    for n in ("n1", "n2"):
        fakes[n] = (FakeConnection(n)
                    .on(re.escape("ref=$1 cur=$2 want=$3"), Reply(stdout=f"image-id\t{image_id}\n"))
                    .on(re.escape("ref=$1 cur=$2"), _probe_reply(None))
                    .on(re.escape("dir=$1 ndel=$2"), Reply(
                        stdout=f"dgxcluster: context ready\ndgxcluster-image-id {image_id}\n")))
    prog = RecordingProgress()
    with _session(ctx, fakes, strategy="distribute") as s:
        report = build(s, progress=prog)
    by = {o.node: o for o in report.nodes}
    assert report.source == "n1" and [o.node for o in report.nodes] == ["n1", "n2"]
    assert (by["n1"].step, by["n1"].status) == ("build", Status.CHANGED)
    assert (by["n2"].step, by["n2"].status) == ("receive", Status.CHANGED)
    assert by["n2"].detail.startswith("received from n1 (40.0 MB in 2.0s, 20.0 MB/s")
    assert by["n1"].data["image_id"] == by["n2"].data["image_id"] == image_id
    assert not any("docker" in c and "build" in c for c in fakes["n2"].calls)  # built once
    assert [c[:3] for c in fakes["n2"].calls][-1] == ["sh", "-c", dockercmd.FINALIZE]
    assert [t for _, t in relay.calls] == [["n2"]]


def test_distribute_with_a_failed_build_fails_the_receivers_and_tags_nothing(
        ctx: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.unit.test_image_distribute import Relay

    relay = Relay()
    monkeypatch.setattr("dgxcluster.core.relay.relay", relay)
    fakes = {n: FakeConnection(n).on(re.escape("ref=$1 cur=$2"), _probe_reply(None))
             .on(re.escape("dir=$1 ndel=$2"), Reply(exit_code=1, stdout="dgxcluster: context ready\n"
                                                    "#5 ERROR: process did not complete\n"))
             for n in ("n1", "n2")}
    with _session(ctx, fakes, strategy="distribute") as s:
        report = build(s)
    by = {o.node: o for o in report.nodes}
    assert by["n1"].status is Status.FAILED and by["n1"].tail[-1] == "#5 ERROR: process did not complete"
    assert by["n2"].status is Status.FAILED and by["n2"].detail == "not received: the build on n1 failed"
    assert relay.calls == []
    assert not any(c[:3] == ["sh", "-c", dockercmd.FINALIZE] for f in fakes.values() for c in f.calls)
