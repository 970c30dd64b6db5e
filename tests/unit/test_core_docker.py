"""Docker helpers shared by the capabilities (core.docker), with the fake connection."""

from __future__ import annotations

import pytest

from dgxcluster.core import docker
from dgxcluster.core.progress import RecordingProgress, StatusThrottle
from dgxcluster.errors import StepError
from tests.fakes import FakeConnection, Reply


@pytest.mark.parametrize(("reply", "why"), [
    (Reply(exit_code=127, stderr="sh: docker: not found"), "docker is not installed here"),
    (Reply(exit_code=1, stderr="Cannot connect to the Docker daemon at unix:///var/run/docker.sock."
           " Is the docker daemon running?"), "the Docker daemon is not running here"),
    (Reply(exit_code=1, stderr="Error: No such image: t/img:ctx-1"),
     "image t/img:ctx-1 is not here: build it first (dgxcluster build)"),
])
def test_require_image_says_why_not(reply: Reply, why: str) -> None:
    conn = FakeConnection("n1").on("image inspect", reply)
    with pytest.raises(StepError) as err:
        docker.require_image(conn, "t/img:ctx-1", "model-pull")
    assert (err.value.step, err.value.node) == ("model-pull", "n1") and why in str(err.value)


def test_require_image_gives_the_id() -> None:
    conn = FakeConnection("n1").on("image inspect", Reply(stdout="sha256:abc\n"))
    assert docker.require_image(conn, "t/img:ctx-1", "x") == "sha256:abc"
    assert conn.calls == [["docker", "image", "inspect", "--format", "{{.Id}}", "t/img:ctx-1"]]


def test_remove_and_stop() -> None:
    conn = (FakeConnection("n1")
            .on("rm -f -v gone", Reply(exit_code=1, stderr="Error: No such container: gone"))
            .on("rm -f -v stuck", Reply(exit_code=1, stderr="Error response from daemon: busy\n"))
            .on("stop -t 10 gone", Reply(exit_code=1, stderr="Error: No such container: gone")))
    assert docker.remove(conn, "there") is True
    assert docker.remove(conn, "gone") is False
    with pytest.raises(StepError, match="docker rm -f stuck: Error response from daemon: busy"):
        docker.remove(conn, "stuck")
    docker.stop(conn, "gone")  # already gone is fine


def test_state_and_log_tail() -> None:
    conn = (FakeConnection("n1").on("inspect -f", Reply(stdout="exited 137\n"))
            .on("docker logs", Reply(stdout="a\nb\n")))
    st = docker.state(conn, "c")
    assert (st.status, st.exit_code, st.running) == ("exited", 137, False)
    assert docker.parse_state("absent") == docker.ContainerState("absent")
    assert docker.log_tail(conn, "c") == "a\nb"
    assert docker.indented("a\n\nb") == "    a\n    \n    b"


def test_status_throttle_reports_each_change_of_gist() -> None:
    rec = RecordingProgress()
    live = StatusThrottle(rec, every_s=3600)
    for gist in ("loading", "loading", "loading", "ready"):
        live.status("n1", gist, f"vllm: {gist}")
    assert rec.statuses == [("n1", "vllm: loading"), ("n1", "vllm: ready")]
