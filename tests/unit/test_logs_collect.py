"""`logs` orchestration with fake connections: layout, manifest, archive, failures, secrets."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest

from dgxcluster.core.progress import RecordingProgress
from dgxcluster.core.session import Session
from dgxcluster.errors import CommandError, UsageError
from dgxcluster.inventory import parse_inventory
from dgxcluster.logs.collect import collect, prepare_output
from dgxcluster.secrets import Redactor
from tests.fakes import FakeConnection, Reply

TOKEN = "hf_" + "Zq9" * 10
INV = """
cluster: demo
nodes:
  - {name: n1, host: 10.0.0.1, fabric_ip: 192.0.2.1}
  - {name: n2, host: 10.0.0.2, fabric_ip: 192.0.2.2}
  - {name: n3, host: 10.0.0.3, fabric_ip: 192.0.2.3}
secrets:
  env: [HF_TOKEN, CORP_PASSPHRASE]
"""


def ray_tar() -> str:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in (("logs/raylet.out", f"raylet up\nHF_TOKEN={TOKEN}\n".encode()),
                           ("logs/gcs_server.out", b"gcs ok\n")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 2_000_000_000
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue().decode("ascii")


def node_stream(argv: list[str], _stdin: bytes | None) -> Reply:
    b = argv[4]  # sh -c SCRIPT sh BOUNDARY ...
    c = "containers/dgxc-demo-head"
    inspect = json.dumps([{"Config": {"Env": [f"HF_TOKEN={TOKEN}", "CORP_PASSPHRASE=open-sesame",
                                              "PATH=/usr/bin"]}}], indent=2)
    parts = [
        ("meta", "now 1790000000", None),
        ("meta", "since 0", None),
        ("file", f"{c}/inspect.json", inspect),
        ("end", f"{c}/inspect.json 0 20", None),
        ("file", f"{c}/docker.log", f"2026-01-01T00:00:00Z started with {TOKEN}\n"),
        ("end", f"{c}/docker.log 0 31", None),
        ("file", f"{c}/ray-logs.tar", ray_tar()),
        ("end", f"{c}/ray-logs.tar 0 40", None),
        ("file", "dgxcluster-logs.tar", ""),
        ("stderr", "dgxcluster-logs.tar", "no directory /x/logs (nothing started here yet?)"),
        ("end", "dgxcluster-logs.tar 1 2", None),
        ("file", "host/uname.txt", "Linux n1 6.1.0 aarch64 GNU/Linux\n"),
        ("end", "host/uname.txt 0 3", None),
        ("file", "host/ibv_devinfo-v.txt", ""),
        ("stderr", "host/ibv_devinfo-v.txt", "sh: 1: ibv_devinfo: not found"),
        ("end", "host/ibv_devinfo-v.txt 127 1", None),
        ("done", "", None),
    ]
    out = ""
    for kind, rest, body in parts:
        out += f"\n{b} {kind} {rest}".rstrip() + "\n" + (body or "")
    return Reply(stdout=out)


def session_with(fakes: dict[str, FakeConnection]) -> Session:
    inv = parse_inventory(INV, environ={})
    return Session.open(inv, factory=lambda spec: fakes[spec.name], environ={},  # type: ignore[arg-type]
                        log_dir=None, redactor=Redactor())


@pytest.fixture
def fakes() -> dict[str, FakeConnection]:
    n1 = FakeConnection("n1").on(r"^sh -c", node_stream)
    n2 = FakeConnection("n2", unreachable="connection timed out")
    n3 = FakeConnection("n3").on(r"^sh -c", Reply(stdout="", exit_code=2, stderr="sh: gzip: broken"))
    return {"n1": n1, "n2": n2, "n3": n3}


def test_bundle_layout_manifest_and_archive(tmp_path: Path, fakes: dict[str, FakeConnection]) -> None:
    prog = RecordingProgress()
    with session_with(fakes) as s:
        bundle = collect(s, out_dir=tmp_path / "out", progress=prog)
    folder = bundle.folder
    assert folder.parent == tmp_path / "out" and folder.name.startswith("demo-")
    assert bundle.archive == folder.with_name(folder.name + ".tar.gz")
    head = folder / "n1" / "containers" / "dgxc-demo-head"
    assert (head / "docker.log").read_text().startswith("2026-01-01T00:00:00Z started with")
    assert (head / "ray" / "raylet.out").read_text().startswith("raylet up")
    assert (head / "ray" / "gcs_server.out").read_text() == "gcs ok\n"
    assert (folder / "n1" / "host" / "uname.txt").read_text().startswith("Linux n1")

    doc = json.loads(bundle.manifest.read_text())
    n1, n2, n3 = (doc["nodes"][n] for n in ("n1", "n2", "n3"))
    assert n1["reachable"] and n1["complete"] and n1["error"] is None
    paths = {f["path"]: f["size"] for f in n1["files"]}
    assert paths["n1/host/uname.txt"] == (folder / "n1/host/uname.txt").stat().st_size
    assert "n1/containers/dgxc-demo-head/ray/raylet.out" in paths
    errors = {e["item"]: e["error"] for e in n1["errors"]}
    assert errors["host/ibv_devinfo-v.txt"].startswith("exit 127: sh: 1: ibv_devinfo: not found")
    assert "no directory" in errors["dgxcluster-logs.tar"]
    items = {i["name"]: i for i in n1["items"]}
    assert items["containers/dgxc-demo-head/docker.log"]["duration_s"] == 0.031
    assert n2 == {**n2, "reachable": False, "error": "connection timed out", "files": []}
    assert n3["reachable"] and not n3["complete"]
    assert "exited 2" in n3["error"] and "gzip: broken" in n3["error"]
    assert bundle.unreachable == ["n2"] and bundle.failed == ["n3"]
    assert ("n2", "unreachable: connection timed out") in prog.statuses

    with tarfile.open(bundle.archive) as tar:
        names = tar.getnames()
    assert f"{folder.name}/manifest.json" in names
    assert f"{folder.name}/n1/containers/dgxc-demo-head/ray/raylet.out" in names


def test_planted_secrets_never_reach_the_bundle(tmp_path: Path,
                                                fakes: dict[str, FakeConnection]) -> None:
    with session_with(fakes) as s:  # the operator has no HF_TOKEN in its environment
        bundle = collect(s, out_dir=tmp_path)
    blobs = [p.read_bytes() for p in bundle.folder.rglob("*") if p.is_file()]
    with tarfile.open(bundle.archive) as tar:
        for m in tar.getmembers():
            f = tar.extractfile(m)
            if f is not None:
                blobs.append(f.read())
    assert len(blobs) > 10
    for blob in blobs:
        assert TOKEN.encode() not in blob
        assert b"open-sesame" not in blob
    inspect = json.loads((bundle.folder / "n1/containers/dgxc-demo-head/inspect.json").read_text())
    assert inspect[0]["Config"]["Env"] == ["HF_TOKEN=******", "CORP_PASSPHRASE=******",
                                           "PATH=/usr/bin"]


def test_the_script_gets_its_values_as_parameters(tmp_path: Path,
                                                 fakes: dict[str, FakeConnection]) -> None:
    with session_with(fakes) as s:
        collect(s, ["n1"], out_dir=tmp_path, since_s=600)
    (argv,) = fakes["n1"].calls
    assert argv[:2] == ["sh", "-c"] and argv[3] == "sh"
    assert argv[5:] == ["dgxcluster.cluster=demo", "~/.local/state/dgxcluster/demo/logs", "600",
                        "300", "/tmp/ray/session_latest/logs", "enp1s0f1np1", "enP2p1s0f1np1"]
    assert fakes["n2"].calls == [] and fakes["n3"].calls == []


def test_unknown_node_is_a_usage_error(tmp_path: Path, fakes: dict[str, FakeConnection]) -> None:
    with session_with(fakes) as s, pytest.raises(UsageError, match="--node"):
        collect(s, ["nope"], out_dir=tmp_path)


def test_bad_output_folder_is_a_usage_error_naming_o(tmp_path: Path) -> None:
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(UsageError) as exc:
        prepare_output(f)
    assert exc.value.option == "-o"
    with pytest.raises(UsageError, match="-o"):
        prepare_output(f / "sub")


def test_a_broken_stream_is_recorded(tmp_path: Path) -> None:
    def garbled(argv: list[str], _stdin: bytes | None) -> Reply:
        return Reply(stdout=f"\n{argv[4]} what is this\n")

    fakes = {"n1": FakeConnection("n1").on("", garbled),
             "n2": FakeConnection("n2").on("", Reply(raises=CommandError("n2", "sh", 1, "x"))),
             "n3": FakeConnection("n3").on("", node_stream)}
    with session_with(fakes) as s:
        bundle = collect(s, out_dir=tmp_path)
    assert "unknown header" in (bundle.nodes["n1"].error or "")
    assert bundle.nodes["n2"].error and "exited 1" in bundle.nodes["n2"].error
    assert bundle.nodes["n3"].complete
