"""The per-node probe: real output captured on a testbed node in, what the node holds out."""

from __future__ import annotations

from pathlib import Path

from dgxcluster.image import probe

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "build"
TAG = "ctx-0f41c9080e07"
REF, CUR = f"btest/secret:{TAG}", "btest/secret:current"


def _parse(name: str, ref: str = REF, cur: str = CUR) -> probe.Probe:
    return probe.parse((FIX / name).read_text(), ref, cur)


def test_present_tag_with_listing() -> None:
    p = _parse("probe_listed.txt")
    assert p.home == "/root" and p.docker_error is None
    assert p.want is not None and p.want.content_tag == TAG
    assert p.current_is_want
    assert p.files is not None and set(p.files) == {"Dockerfile"}
    f = p.files["Dockerfile"]
    assert (f.kind, f.size, f.mode, f.mtime) == ("f", 216, 0o644, 1795350284)
    assert p.manifest is not None and p.manifest["files"]["Dockerfile"]["s"] == 216


def test_absent_content_tag_current_still_read() -> None:
    p = _parse("probe_missing.txt", ref="btest/secret:ctx-000000000000")
    assert p.docker_error is None
    assert p.want is None and not p.has_want
    assert p.current is not None and p.current.content_tag == TAG
    assert not p.current_is_want
    assert p.files is not None  # listed: this node will need the context


def test_nothing_there_is_not_an_error() -> None:
    p = _parse("probe_none.txt", ref="btest/none:ctx-000000000000", cur="btest/none:current")
    assert p.docker_error is None and p.want is None and p.current is None


def test_docker_daemon_down_is_an_error_not_an_absent_image() -> None:
    p = _parse("probe_docker_down.txt", ref="btest/secret:ctx-000000000000")
    assert p.docker_error is not None and "Cannot connect to the Docker daemon" in p.docker_error
    assert p.want is None


def test_other_wordings_and_garbage() -> None:
    # newer Docker words the absent image differently; labels may be null
    text = ("home\t/h\ninspect\tsha256:abc\tnull\n"
            "inspect\tError response from daemon: No such image: a:ctx-000000000001\n"
            "inspect-exit\t1\nnoise\nfile\tbad\nmanifest\t[1,2]\n")
    p = probe.parse(text, "a:ctx-000000000001", "a:current")
    assert p.want is None
    assert p.current is not None and p.current.labels == {} and p.current.content_tag is None
    assert p.files is None and p.manifest is None
    assert probe.parse("home\t/h\n", "a:b", "a:c").docker_error  # no inspect result at all


def test_a_ref_that_prefixes_another_is_not_confused() -> None:
    text = ("home\t/h\ninspect\tsha256:abc\tnull\n"
            "inspect\tError: No such image: a:currently\ninspect-exit\t1\n")
    p = probe.parse(text, "a:current", "a:currently")
    assert p.want is not None and p.current is None


def test_argv_passes_values_as_arguments_not_script_text() -> None:
    argv = probe.argv("img:ctx-0123456789ab", "img:current", "~/state $(x)", "build/img", True)
    assert argv[:2] == ["sh", "-c"] and argv[2] == probe.SCRIPT
    assert argv[3:] == ["sh", "img:ctx-0123456789ab", "img:current", "~/state $(x)", "build/img",
                        "1"]
