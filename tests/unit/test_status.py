"""`status`: the per-node probe's parser, the report built from it, and the one-round rule."""

from __future__ import annotations

import json
from pathlib import Path

from dgxcluster.core.endpoint import EndpointProbe
from dgxcluster.core.session import Session
from dgxcluster.inventory import parse_inventory
from dgxcluster.secrets import CollectedRedactor, Redactor
from dgxcluster.status.gather import gather
from dgxcluster.status.probe import STATUS, parse, parse_docker, parse_time, status_argv
from dgxcluster.status.report import (
    ImageSummary,
    NodeStatus,
    RaySummary,
    VllmProcess,
    image_state,
    image_summary,
    node_status,
    ray_lags,
    ray_summary,
    vllm_process,
)
from tests.fakes import FakeConnection, Reply

FIX = Path(__file__).resolve().parents[1] / "fixtures"
TAG = "ctx-0123456789ab"
ID1 = "sha256:" + "1" * 64
ID2 = "sha256:" + "2" * 64
INV = """
cluster: demo
nodes:
  - {name: n1, host: 10.0.0.1, fabric_ip: 192.0.2.1}
  - {name: n2, host: 10.0.0.2, fabric_ip: 192.0.2.2}
  - {name: n3, host: 10.0.0.3, fabric_ip: 192.0.2.3}
image: {name: dgxcluster/testbed}
"""


def container_line(name: str, role: str, status: str, started: str, finished: str,
                   image_id: str = ID1, exit_code: int = 0) -> str:
    state = {"Status": status, "Running": status == "running", "ExitCode": exit_code,
             "StartedAt": started, "FinishedAt": finished, "Pid": 42}
    labels = {"dgxcluster.cluster": "demo", "dgxcluster.role": role, "dgxcluster.node": "n1",
              "dgxcluster.config": "abc"}
    return "\t".join(json.dumps(v) for v in ("c0ffee", f"/{name}", state, None, labels, image_id,
                                             f"dgxcluster/testbed:{TAG}"))


def image_line(image_id: str = ID1, tag: str | None = TAG, labelled: bool = True) -> str:
    tags = ["dgxcluster/testbed:current"] + ([f"dgxcluster/testbed:{tag}"] if tag else [])
    labels = {"dgxcluster.content-tag": tag} if labelled and tag else {}
    return "\t".join(json.dumps(v) for v in (image_id, None, None, tags, labels, None, None))


NO_IMAGE = "Error: No such object: dgxcluster/testbed:current"


def probe_output(*, docker: str, docker_rc: int = 0, gpu: str = "", gpu_rc: int = 127,
                 ray: str | None = None, ray_rc: int = 0) -> str:
    out = ("@@ now 1790000100\n@@ docker\n" + docker + f"\n\n@@ rc {docker_rc}\n"
           "@@ gpu\n" + gpu + f"\n\n@@ rc {gpu_rc}\n")
    if ray is not None:
        out += "@@ ray\n" + ray + f"\n\n@@ rc {ray_rc}\n"
    return out


RUNNING = container_line("dgxc-demo-head", "head", "running", "2026-09-21T13:13:20.123456789Z",
                         "0001-01-01T00:00:00Z")
EXITED = container_line("dgxc-demo-worker", "worker", "exited", "2026-09-21T13:00:00Z",
                        "2026-09-21T13:14:00.5Z", exit_code=137)
DOCKER = image_line() + "\n" + RUNNING


def test_probe_sections_and_node_status() -> None:
    text = probe_output(docker=image_line() + "\n" + RUNNING + "\n" + EXITED,
                        gpu=(FIX / "real" / "nvidia-smi_gb10_with_processes_obrienlabs.txt").read_text(),
                        gpu_rc=0)
    probe = parse(text)
    assert probe.now == 1790000100
    assert probe.sections["docker"].rc == 0
    st = node_status("n1", "head", probe)
    assert st.docker is True
    assert st.image is not None and (st.image.content_tag, st.image.image_id) == (TAG, ID1)
    head, worker = st.containers
    # node clock 1790000100 = 14:15:00Z; started 13:13:20.12Z (the node's clock, not ours)
    assert (head.role, head.state, head.uptime_s) == ("head", "running", 3699)
    assert head.describe() == "head running 1h01m"
    assert (worker.state, worker.exit_code, worker.uptime_s) == ("exited", 137, None)
    assert worker.describe() == "worker exited (exit 137) 1h00m ago"
    assert st.gpu == "NVIDIA GB10 10% 45C"


def test_docker_down_is_reported_with_its_reason() -> None:
    probe = parse(probe_output(docker="Cannot connect to the Docker daemon at "
                               "unix:///var/run/docker.sock. Is the docker daemon running?",
                               docker_rc=1))
    st = node_status("n2", "worker", probe)
    assert st.docker is False
    assert st.docker_error is not None and "Cannot connect to the Docker daemon" in st.docker_error
    assert st.gpu is None and st.gpu_error == "no nvidia-smi on this node"


def test_a_cut_short_probe_is_an_error_not_a_crash() -> None:
    st = node_status("n1", "head", parse("@@ now 1\n@@ docker\n" + image_line()))
    assert st.error == "the status script was cut short"


def test_content_tag_is_the_label_build_sets() -> None:
    img = parse_docker(image_line())[0]
    assert image_state(img).content_tag == TAG
    unlabelled = parse_docker(image_line(labelled=False))[0]
    assert image_state(unlabelled).content_tag is None
    assert image_state(parse_docker(NO_IMAGE)[0]) == image_state(None)
    assert image_state(None).image_id is None


def test_image_summary_same_each_different_missing_and_stale() -> None:
    def node(name: str, docker: str) -> NodeStatus:
        return node_status(name, "worker", parse(probe_output(docker=docker)))

    def summary(*nodes: NodeStatus) -> ImageSummary:
        return image_summary("dgxcluster/testbed", list(nodes), TAG, None)

    s = summary(node("n1", image_line()), node("n2", image_line()))
    assert s.consistent and s.ids_match and s.matches_expected is True
    assert s.detail == f"dgxcluster/testbed:{TAG} (image {'1' * 12}) on every node"
    each = summary(node("n1", image_line(ID1)), node("n2", image_line(ID2)))
    assert each.consistent and each.ids_match is False and "built on each node" in each.detail
    stale = summary(node("n1", image_line(tag="ctx-aaaaaaaaaaaa")),
                    node("n2", image_line(tag="ctx-aaaaaaaaaaaa")))
    assert stale.consistent and stale.matches_expected is False and "build" in stale.detail
    diff = summary(node("n1", image_line()), node("n2", image_line(ID2, "ctx-aaaaaaaaaaaa")))
    assert not diff.consistent
    assert f"n1: holds {TAG}, others hold ctx-aaaaaaaaaaaa" in diff.detail
    missing = summary(node("n1", image_line()), node("n2", NO_IMAGE))
    assert not missing.consistent
    assert "n2: no image built by dgxcluster (run: dgxcluster build)" in missing.detail
    by_hand = summary(node("n1", image_line()), node("n2", image_line(labelled=False)))
    assert not by_hand.consistent and "n2: `current` has no content-tag label" in by_hand.detail
    down = NodeStatus("n3", "worker", reachable=False, error="connection refused")
    s = summary(node("n1", image_line()), down)
    assert not s.consistent and "n3: unreachable: connection refused" in s.detail


def test_ray_summary_from_the_head() -> None:
    ray_json = (FIX / "captured" / "ray_cluster_status_format1_testbed_placement_group.txt"
                ).read_text().split("\n", 1)[1]
    up = ray_summary("n1", parse(probe_output(docker="", ray=ray_json)), 2)
    assert (up.state, up.nodes_alive, up.gpus_total, up.gpus_used, up.gpus_reserved) == (
        "up", 1, 1.0, 0.0, 1.0)
    assert up.describe() == "1/2 nodes alive, GPUs 0/1 used (1 reserved by placement groups)"
    down = ray_summary("n1", parse(probe_output(
        docker="", ray="curl: (7) Failed to connect to 127.0.0.1 port 8265: Connection refused",
        ray_rc=7)), 2)
    assert down.state == "down" and down.error == "no Ray dashboard on n1"
    assert ray_summary("n1", None, 2).state == "unknown"


def test_a_ray_count_behind_the_running_containers_says_rays_view_lags() -> None:
    """Real `ray status` text (two DGX Sparks, 1 GPU each, no placement group yet: "0.0/2.0
    GPU"), as the dashboard returns it: right after a start whose vLLM is ready on both GPUs,
    Ray's snapshot (refreshed every 5 s) still says 0 used, and the line says so."""
    text = (FIX / "real" / "ray_status_2x_dgx_spark_head_container_oshlabs.txt"
            ).read_text().split("\n", 1)[1]
    ray_json = json.dumps({"data": {"clusterStatus": text}})
    running = container_line("dgxc-demo-head", "head", "running",
                             "2026-09-21T13:13:20.123456789Z", "0001-01-01T00:00:00Z")
    worker = container_line("dgxc-demo-worker", "worker", "running",
                            "2026-09-21T13:13:21Z", "0001-01-01T00:00:00Z")
    nodes = [node_status("n1", "head", parse(probe_output(docker=running))),
             node_status("n2", "worker", parse(probe_output(docker=worker)))]

    def summary() -> RaySummary:
        return ray_summary("n1", parse(probe_output(docker="", ray=ray_json)), 2)

    ray = summary()
    assert (ray.nodes_alive, ray.gpus_total, ray.gpus_used) == (2, 2.0, 0.0)
    assert not ray_lags(ray, nodes, gpus_per_node=1, gpus_in_use=0)  # vLLM not ready: true
    assert ray_lags(ray, nodes, gpus_per_node=1, gpus_in_use=2)  # ready on 2 GPUs: stale
    ray.lagging = True
    assert ray.describe() == ("2/2 nodes alive, GPUs 0/2 used "
                              "(Ray's view is refreshed every 5 s)")
    assert ray.to_json()["lagging"] is True
    third = node_status("n3", "worker", parse(probe_output(docker=worker)))
    assert ray_lags(summary(), [*nodes, third], gpus_per_node=1, gpus_in_use=0)  # 2 < 3 nodes
    assert ray_lags(summary(), nodes, gpus_per_node=2, gpus_in_use=0)  # 2 < 4 GPUs
    caught_up = (FIX / "real" / "ray_status_v_testbed_2node_ray2.60_pg.txt"
                 ).read_text().split("\n", 1)[1]
    ray = ray_summary("n1", parse(probe_output(
        docker="", ray=json.dumps({"data": {"clusterStatus": caught_up}}))), 2)
    assert (ray.gpus_used, ray.gpus_total) == (2.0, 2.0)
    assert not ray_lags(ray, nodes, gpus_per_node=1, gpus_in_use=2)


def test_docker_times() -> None:
    assert parse_time("0001-01-01T00:00:00Z") is None
    t = parse_time("2026-09-21T13:13:20.123456789Z")
    assert t is not None and t.microsecond == 123456
    assert parse_time("2026-09-21T15:13:20+02:00") == parse_time("2026-09-21T13:13:20Z")
    assert parse_docker("garbage\n\t\t\t\t\t\t\n") == (None, [])


def test_one_round_per_node_and_head_asks_ray(tmp_path: Path) -> None:
    ray_json = (FIX / "captured" / "ray_cluster_status_format1_testbed_1node.txt"
                ).read_text().split("\n", 1)[1]
    fakes = {
        "n1": FakeConnection("n1").on("", Reply(stdout=probe_output(docker=DOCKER, ray=ray_json))),
        "n2": FakeConnection("n2").on("", Reply(stdout=probe_output(docker=image_line()))),
        "n3": FakeConnection("n3", unreachable="connection refused"),
    }
    inv = parse_inventory(INV, environ={})
    with Session.open(inv, factory=lambda spec: fakes[spec.name], environ={},  # type: ignore[arg-type]
                      redactor=Redactor()) as s:
        report = gather(s, expected=lambda _s: TAG,
                        check_endpoint=lambda _s: EndpointProbe("http://10.0.0.1:8000",
                                                                "not serving", error="refused"))
    assert [len(f.calls) for f in fakes.values()] == [1, 1, 0]
    head_argv, worker_argv = fakes["n1"].calls[0], fakes["n2"].calls[0]
    assert head_argv[2] == worker_argv[2] == STATUS
    assert head_argv[-7] == "8265" and worker_argv[-7] == ""
    # every node reports its vLLM launcher's files (each runs a rank with the native executor)
    assert head_argv[-5] == worker_argv[-5] == "~/.local/state/dgxcluster/demo/logs"
    assert head_argv[-4:-1] == ["vllm.pid", "vllm.exit", "vllm.log"]
    # and whether its boot unit (serve.persist) is enabled
    assert head_argv[-1] == worker_argv[-1] == "dgxcluster-demo.service"
    assert head_argv[4] == "dgxcluster/testbed:current"
    assert head_argv == status_argv("dgxcluster/testbed", "demo", 8265,
                                    "~/.local/state/dgxcluster/demo/logs")
    assert report.unreachable == ["n3"]
    assert report.ray.state == "up" and report.ray.nodes_alive == 1
    assert not report.image.consistent  # n3 did not answer: start would refuse too
    assert report.image.detail == "n3: unreachable: connection refused"
    assert report.image.matches_expected and report.image.ids_match
    doc = report.to_json()
    assert doc["nodes"][2] == {**doc["nodes"][2], "reachable": False,  # type: ignore[index]
                               "error": "connection refused"}
    assert doc["vllm"]["state"] == "not serving"  # type: ignore[index]
    json.dumps(doc)


def test_expected_tag_failure_is_reported_not_raised() -> None:
    fakes = {n: FakeConnection(n).on("", Reply(stdout=probe_output(docker=image_line())))
             for n in ("n1", "n2", "n3")}
    inv = parse_inventory(INV, environ={})

    def broken(_s: Session) -> str:
        from dgxcluster.errors import UsageError

        raise UsageError("build context /x is not a directory", "image.context")

    with Session.open(inv, factory=lambda spec: fakes[spec.name], environ={},  # type: ignore[arg-type]
                      redactor=Redactor()) as s:
        report = gather(s, expected=broken,
                        check_endpoint=lambda _s: EndpointProbe("u", "not serving"))
    assert report.image.expected_tag is None
    assert report.image.expected_error == "image.context: build context /x is not a directory"
    assert report.image.consistent and report.image.matches_expected is None


STATUS_FIX = FIX / "status"


def capture(name: str) -> str:
    return (STATUS_FIX / name).read_text().split("\n", 1)[1]


def test_engine_api_path_head_running_with_the_built_image() -> None:
    probe = parse(capture("probe_api_head_running.txt"))
    assert probe.section("api") is not None and probe.section("docker") is None
    st = node_status("node1", "head", probe)
    assert st.docker is True and st.error is None
    assert st.image is not None and st.image.content_tag == "ctx-3dbcd60a1cb9"
    assert st.image.image_id is not None and st.image.image_id.startswith("sha256:88caff7f8cf3")
    (head,) = st.containers
    assert (head.name, head.role, head.state) == ("dgxc-ld2-head", "head", "running")
    assert head.uptime_s == 1  # node clock minus creation time
    assert head.status_text == "Up 1 second"
    assert st.gpu is None and st.gpu_error == "no nvidia-smi on this node"


def test_engine_api_path_exited_container_and_no_image() -> None:
    st = node_status("node2", "worker", parse(capture("probe_api_worker_exited_no_image.txt")))
    assert st.docker is True
    assert st.image is not None and st.image.image_id is None
    (worker,) = st.containers
    assert (worker.state, worker.exit_code, worker.uptime_s) == ("exited", 137, None)
    assert worker.describe() == "worker exited (137) Less than a second ago"


def test_engine_api_path_daemon_down() -> None:
    text = ("@@ now 1\n@@ api\n/var/run/docker.sock\ncurl: (7) Failed to connect to docker port "
            "80 after 0 ms: Couldn't connect to server\n\n@@ rc 7\n")
    st = node_status("n1", "head", parse(text))
    assert st.docker is False
    assert st.docker_error == ("Cannot connect to the Docker daemon at unix:///var/run/docker.sock: "
                               "curl: (7) Failed to connect to docker port 80 after 0 ms: "
                               "Couldn't connect to server")


def test_engine_api_answer_that_is_not_a_list_is_an_error() -> None:
    text = '@@ now 1\n@@ api\n/run/docker.sock\n{"message": "client version 1.99 is too new"}\n\n@@ rc 0\n'
    st = node_status("n1", "head", parse(text))
    assert st.docker is False and st.docker_error is not None
    assert st.docker_error.endswith("client version 1.99 is too new")


def test_the_api_filter_and_the_cli_fallback_travel_as_parameters() -> None:
    argv = status_argv("dgxcluster/testbed", "demo", None)
    assert json.loads(argv[-6]) == {"label": ["dgxcluster.cluster=demo"]}
    assert argv[5] == "label=dgxcluster.cluster=demo"
    assert "docker ps -aq" in STATUS and "--unix-socket" in STATUS


def test_vllm_process_is_read_only_while_the_head_container_runs() -> None:
    head = node_status("n1", "head", parse(probe_output(docker=DOCKER)))
    gone = node_status("n1", "head", parse(probe_output(docker=image_line())))

    def proc(vllm: str, node: NodeStatus = head) -> VllmProcess | None:
        text = probe_output(docker="") + "@@ vllm\n" + vllm + "\n@@ rc 0\n"
        return vllm_process(parse(text), node, CollectedRedactor().text)

    loading = proc(f"pid 123\nlast INFO loading weights for hf_token='{'hf_' + 'x' * 30}'")
    assert loading is not None and loading.state == "running"
    assert loading.last_line == "INFO loading weights for hf_token='******'"
    died = proc("pid 123\nexit 1\nlast RuntimeError: CUDA out of memory")
    assert died == VllmProcess("exited", 1, "RuntimeError: CUDA out of memory")
    assert died.describe() == "vLLM exited (1): RuntimeError: CUDA out of memory"
    assert proc("exit 0\nlast bye", gone) == VllmProcess("absent")  # after stop: the past
    assert proc("") == VllmProcess("absent")
    assert vllm_process(parse(probe_output(docker="")), head, str) is None  # not the head


def test_the_watchers_state_file_is_shown_with_its_last_restart() -> None:
    from dgxcluster.status.report import Healing, healing

    def heal(line: str) -> Healing | None:
        text = probe_output(docker="") + "@@ vllm\npid 1\n" + line + "\n@@ rc 0\n"
        return healing(parse(text), CollectedRedactor().text)

    gave_up = heal('supervisor {"state": "gave up", "restarts": 3, "last": {"time": '
                   '"2026-12-02T01:00:00Z", "what": "vllm", "why": "vLLM exited with status 1; '
                   'gave up after 3 restart(s) within 600s, cluster left stopped", "exit": 1}}')
    assert gave_up is not None and (gave_up.state, gave_up.restarts) == ("gave up", 3)
    assert gave_up.describe() == ("gave up, 3 restart(s); last 2026-12-02T01:00:00Z: vllm: vLLM "
                                  "exited with status 1; gave up after 3 restart(s) within 600s, "
                                  "cluster left stopped, exit 1")
    assert heal('supervisor {"state": "watching", "restarts": 0, "last": null}') == Healing("watching")
    assert heal("supervisor {not json") == Healing("unknown (state file unreadable)")
    assert heal("") is None  # no watcher ever ran
    assert "supervisor.json" in STATUS


def native_container(name: str, role: str, status: str, exit_code: int = 0) -> str:
    line = container_line(name, role, status, "2026-09-21T13:13:20Z",
                          "0001-01-01T00:00:00Z" if status == "running" else "2026-09-21T13:14:00Z",
                          exit_code=exit_code)
    return line.replace('"dgxcluster.config": "abc"',
                        '"dgxcluster.config": "abc", "dgxcluster.executor": "native"')


def test_native_status_shows_each_rank_instead_of_ray(tmp_path: Path) -> None:
    """With the native executor there is no Ray: one row per vLLM rank (node, rank, alive,
    last log line), read from each node's launcher files; the token in a line is masked."""
    vllm = "@@ vllm\npid 7\nlast {}\n@@ rc 0\n"
    fakes = {
        "n1": FakeConnection("n1").on("", Reply(stdout=probe_output(
            docker=image_line() + "\n" + native_container("dgxc-demo-head", "head", "running"),
            ray="curl: (7) Failed to connect to 127.0.0.1 port 8265", ray_rc=7)
            + vllm.format("INFO: Application startup complete."))),
        "n2": FakeConnection("n2").on("", Reply(stdout=probe_output(
            docker=image_line() + "\n" + native_container("dgxc-demo-worker", "worker", "exited", 1))
            + "@@ vllm\npid 8\nexit 1\nlast RuntimeError: HF_TOKEN=hf_abcdefghijklmnopqrstu\n"
              "@@ rc 0\n")),
        "n3": FakeConnection("n3").on("", Reply(stdout=probe_output(docker=image_line())
                                                + "@@ vllm\n@@ rc 0\n")),
    }
    inv = parse_inventory(INV, environ={})
    with Session.open(inv, factory=lambda spec: fakes[spec.name], environ={},  # type: ignore[arg-type]
                      redactor=Redactor(), log_dir=tmp_path) as s:
        report = gather(s, expected=lambda _s: TAG,
                        check_endpoint=lambda _s: EndpointProbe("http://10.0.0.1:8000", "ready"))
    assert report.executor == "native"  # the head container's label, though the inventory says ray
    assert report.ranks is not None
    rows = [(r.node, r.rank, r.alive, r.describe()) for r in report.ranks]
    assert rows == [("n1", 0, True, "alive"), ("n2", 1, False, "exited (1)"),
                    ("n3", 2, False, "no container")]
    assert report.ranks[0].last_line == "INFO: Application startup complete."
    assert "hf_abcdefghijklmnopqrstu" not in (report.ranks[1].last_line or "")
    js = report.to_json()
    assert js["executor"] == "native" and js["ranks"][1]["alive"] is False  # type: ignore[index]


def test_data_parallel_status_shows_each_nodes_replica_and_the_layout(tmp_path: Path) -> None:
    """TP 1 x DP 3 on three nodes: each rank's row names its replica, the report the layout
    (the ranks table's title in `status`)."""
    vllm = "@@ vllm\npid 7\nlast x\n@@ rc 0\n"
    fakes = {n: FakeConnection(n).on("", Reply(stdout=probe_output(
        docker=image_line() + "\n" + native_container(f"dgxc-demo-{role}", role, "running"))
        + vllm)) for n, role in (("n1", "head"), ("n2", "worker"), ("n3", "worker"))}
    inv = parse_inventory(INV + "serve: {executor: native, tensor_parallel_size: 1, "
                          "data_parallel_size: 3}\n", environ={})
    with Session.open(inv, factory=lambda spec: fakes[spec.name], environ={},  # type: ignore[arg-type]
                      redactor=Redactor(), log_dir=tmp_path) as s:
        report = gather(s, expected=lambda _s: TAG,
                        check_endpoint=lambda _s: EndpointProbe("http://10.0.0.1:8000", "ready"))
    assert report.ranks is not None and report.layout == "DP 3 x TP 1"
    assert [(r.node, r.rank, r.replica, r.alive) for r in report.ranks] == [
        ("n1", 0, "0", True), ("n2", 1, "1", True), ("n3", 2, "2", True)]
    js = report.to_json()
    assert js["layout"] == "DP 3 x TP 1" and js["ranks"][2]["replica"] == "2"  # type: ignore[index]


def test_native_status_shows_each_ranks_own_watcher(tmp_path: Path) -> None:
    """Native: every node runs its own watcher; each rank's row carries its state (restarts,
    the last reason), the head's is the `healing` line as with Ray; `--json` has both."""
    heal = ('supervisor {{"state": "watching", "restarts": {n}, "last": {{"time": '
            '"2026-12-02T01:00:00Z", "what": "vllm", "why": "vLLM exited with status {c}", '
            '"exit": {c}}}}}')
    vllm = "@@ vllm\npid 7\nlast x\n{}\n@@ rc 0\n"
    fakes = {
        "n1": FakeConnection("n1").on("", Reply(stdout=probe_output(
            docker=image_line() + "\n" + native_container("dgxc-demo-head", "head", "running"))
            + vllm.format(heal.format(n=1, c=137)))),
        "n2": FakeConnection("n2").on("", Reply(stdout=probe_output(
            docker=image_line() + "\n" + native_container("dgxc-demo-worker", "worker", "running"))
            + vllm.format(heal.format(n=2, c=1)))),
        "n3": FakeConnection("n3").on("", Reply(stdout=probe_output(
            docker=image_line() + "\n" + native_container("dgxc-demo-worker", "worker", "running"))
            + vllm.format(""))),
    }
    inv = parse_inventory(INV + "serve: {executor: native, tensor_parallel_size: 3}\n", environ={})
    with Session.open(inv, factory=lambda spec: fakes[spec.name], environ={},  # type: ignore[arg-type]
                      redactor=Redactor(), log_dir=tmp_path) as s:
        report = gather(s, expected=lambda _s: TAG,
                        check_endpoint=lambda _s: EndpointProbe("http://10.0.0.1:8000", "ready"))
    assert report.ranks is not None and report.healing is not None
    assert report.healing.restarts == 1  # the head's line, as before
    by = {r.node: r.healing for r in report.ranks}
    assert by["n3"] is None  # no watcher ran there
    assert by["n1"] is not None and by["n2"] is not None
    assert (by["n1"].restarts, by["n2"].restarts) == (1, 2)
    assert by["n2"].describe() == ("watching, 2 restart(s); last 2026-12-02T01:00:00Z: vllm: "
                                   "vLLM exited with status 1, exit 1")
    js = report.to_json()
    ranks = js["ranks"]
    assert isinstance(ranks, list)
    assert [r["healing"] and r["healing"]["restarts"] for r in ranks] == [1, 2, None]
    json.dumps(js)  # JSON-able as `status --json` prints it


def test_ray_status_shows_each_worker_nodes_own_watcher(tmp_path: Path) -> None:
    """Ray: the head's watcher is the `healing` line; a worker node's (over its Ray worker
    container) is reported by node, only where one ran; `--json` has them under vllm."""
    heal = ('supervisor {"state": "watching", "restarts": 1, "last": {"time": '
            '"2026-12-02T01:00:00Z", "what": "container dgxc-demo-worker", "why": '
            '"container exited (exit 137)", "exit": 137}}')
    vllm = "@@ vllm\n{}\n@@ rc 0\n"
    fakes = {n: FakeConnection(n).on("", Reply(stdout=probe_output(docker=DOCKER)
                                                + vllm.format(heal if n == "n2" else "")))
             for n in ("n1", "n2", "n3")}
    inv = parse_inventory(INV, environ={})
    with Session.open(inv, factory=lambda spec: fakes[spec.name], environ={},  # type: ignore[arg-type]
                      redactor=Redactor(), log_dir=tmp_path) as s:
        report = gather(s, expected=lambda _s: TAG,
                        check_endpoint=lambda _s: EndpointProbe("http://10.0.0.1:8000", "ready"))
    assert report.healing is None and list(report.worker_healing) == ["n2"]
    assert report.worker_healing["n2"].describe() == (
        "watching, 1 restart(s); last 2026-12-02T01:00:00Z: container dgxc-demo-worker: "
        "container exited (exit 137), exit 137")
    vllm_js = report.to_json()["vllm"]
    assert isinstance(vllm_js, dict) and vllm_js["worker_healing"]["n2"]["restarts"] == 1
    json.dumps(report.to_json())


def test_ray_status_has_no_rank_rows() -> None:
    fakes = {n: FakeConnection(n).on("", Reply(stdout=probe_output(docker=DOCKER)))
             for n in ("n1", "n2", "n3")}
    inv = parse_inventory(INV, environ={})
    with Session.open(inv, factory=lambda spec: fakes[spec.name], environ={},  # type: ignore[arg-type]
                      redactor=Redactor()) as s:
        report = gather(s, expected=lambda _s: TAG,
                        check_endpoint=lambda _s: EndpointProbe("http://10.0.0.1:8000", "ready"))
    assert report.executor == "ray" and report.ranks is None
    assert report.to_json()["ranks"] is None
