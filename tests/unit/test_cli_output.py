"""The CLI's output helpers: the outcome table, the masked streams, plain live lines in CI."""

from __future__ import annotations

import io

import pytest

from dgxcluster.cli import output, reportout
from dgxcluster.cli.build_report import print_report
from dgxcluster.core.steps import Outcome, Status
from dgxcluster.image.run import BuildReport

TOKEN = "hf_" + "Zz9Yy8Xx7Ww6Vv5Uu4Tt3Ss2"


def test_outcome_table_shows_every_node_step_status_and_detail(
        capsys: pytest.CaptureFixture[str]) -> None:
    output.outcome_table("stop", [Outcome("n1", "clean", Status.CHANGED, "removed dgxc-c-head"),
                                  Outcome("n2", "discover", Status.UNREACHABLE, "timed out")])
    out = capsys.readouterr().out
    assert "stop" in out
    for text in ("n1", "clean", "changed", "removed dgxc-c-head", "n2", "unreachable", "timed out"):
        assert text in out


def test_masked_stream_hides_token_shapes_whoever_prints() -> None:
    buf = io.StringIO()
    stream = output.MaskedStream(buf)
    assert stream.write(f"token {TOKEN} end\n") == len(f"token {TOKEN} end\n")
    assert TOKEN not in buf.getvalue() and buf.getvalue().startswith("token ")
    assert stream.getvalue() == buf.getvalue()  # everything else passes through


def test_live_nodes_prints_plain_prefixed_lines_off_a_terminal(
        capsys: pytest.CaptureFixture[str]) -> None:
    with output.LiveNodes(["n1", "n2"], "build", show_lines=False) as live:
        live.status("n1", "building")
        live.line("n1", "#1 FROM base")  # hidden: show_lines=False
        live.message("note")
    err = capsys.readouterr().err
    assert err.splitlines() == ["n1: building", "note"]


def test_report_console_is_wide_when_piped() -> None:
    assert reportout.report_console().width == reportout.PIPE_WIDTH


def test_build_report_prints_failures_tail_and_log(capsys: pytest.CaptureFixture[str]) -> None:
    report = BuildReport("t/img", "t/img:ctx-1", "ctx-1", "each", False, [
        Outcome("n1", "build", Status.UNCHANGED, "up to date", data={"image_id": "sha256:a"}),
        Outcome("n2", "build", Status.FAILED, "build failed (exit 1)", tail=("step 1", "error x"),
                log="/logs/n2/build.log")])
    print_report(report)
    cap = capsys.readouterr()
    assert "up to date" in cap.out and "build failed (exit 1)" in cap.out
    assert "n2: last 2 lines:\nn2: step 1\nn2: error x\n" in cap.err
    assert "n2: full log: /logs/n2/build.log" in cap.err
    print_report(report, json_out=True)
    import json

    doc = json.loads(capsys.readouterr().out)
    assert [n["status"] for n in doc["nodes"]] == ["unchanged", "failed"]
    assert doc["nodes"][0]["image_id"] == "sha256:a" and doc["nodes"][1]["tail"] == ["step 1",
                                                                                    "error x"]
