"""The per-node probe: real output captured on a testbed node in, what the node holds out."""

from __future__ import annotations

from pathlib import Path

from dgxcluster.build import probe

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "build"


def test_listed_probe_gives_tags_files_and_manifest() -> None:
    p = probe.parse((FIX / "probe_listed.txt").read_text())
    assert p.home == "/root"
    assert p.docker_error is None
    assert p.want is not None and p.want.content_tag == "ctx-3dbcd60a1cb9"
    assert p.current_is_want
    assert p.files is not None and set(p.files) == {".dockerignore", "Dockerfile", "entrypoint.sh",
                                                    "standin/vllm"}
    vllm = p.files["standin/vllm"]
    assert (vllm.kind, vllm.size, vllm.mode, vllm.mtime) == ("f", 191, 0o755, 1795349332)
    assert p.manifest is not None and p.manifest["version"] == 1


def test_absent_tag_is_none_and_current_still_read() -> None:
    p = probe.parse((FIX / "probe_missing.txt").read_text())
    assert p.want is None and not p.has_want
    assert p.current is not None and p.current.content_tag == "ctx-3dbcd60a1cb9"
    assert not p.current_is_want
    assert p.files is None


def test_docker_daemon_down_is_an_error_not_an_absent_image() -> None:
    text = ("home\t/home/nvidia\ndocker-error\tCannot connect to the Docker daemon at "
            "unix:///var/run/docker.sock. Is the docker daemon running?\n")
    p = probe.parse(text)
    assert p.docker_error is not None and "Cannot connect" in p.docker_error
    assert p.want is None


def test_image_without_labels_and_garbage_lines_do_not_break_parsing() -> None:
    p = probe.parse("home\t/root\nwant\tsha256:abc\tnull\nnoise\nfile\tbad\n"
                    "current\tsha256:abc\t{not json\nmanifest\t[1,2]\n")
    assert p.want is not None and p.want.labels == {} and p.want.content_tag is None
    assert p.current is not None and p.current.id == "sha256:abc"
    assert p.files is None and p.manifest is None


def test_argv_passes_values_as_arguments_not_script_text() -> None:
    argv = probe.argv("img:ctx-0123456789ab", "img:current", "~/state $(x)", "build/img", True)
    assert argv[:2] == ["sh", "-c"] and argv[2] == probe.SCRIPT
    assert argv[3:] == ["sh", "img:ctx-0123456789ab", "img:current", "~/state $(x)", "build/img",
                        "1"]
