"""What `start` would run, as pure data: docker run argv, vllm serve, env, config hash."""

from __future__ import annotations

from dgxcluster.core import endpoint
from dgxcluster.core.containerenv import container_env
from dgxcluster.core.nodepaths import NodePaths
from dgxcluster.inventory import parse_inventory
from dgxcluster.remote.command import to_command_line
from dgxcluster.secrets import Secret, render_env_file
from dgxcluster.serving import plan

SPARKS = """\
cluster: spark
nodes:
  - {name: spark1, host: spark1.local, fabric_ip: 192.168.100.10, rail_ips: [192.168.100.10, 192.168.101.10]}
  - {name: spark2, host: spark2.local, fabric_ip: 192.168.100.11, rail_ips: [192.168.100.11, 192.168.101.11]}
serve:
  model: Qwen/Qwen3-30B-A3B-FP8
  max_model_len: 32768
  gpu_memory_utilization: 0.8
  extra_args: [--enforce-eager]
"""
PATHS = NodePaths(home="/home/nvidia", state_dir="~/.local/state/dgxcluster", cluster="spark")
IMAGE = "dgxcluster/vllm-gb10:ctx-0123456789ab"
TOKEN = Secret("hf_abcdefghijklmnop", "HF_TOKEN")


def inv(text: str = SPARKS, **env: str):  # type: ignore[no-untyped-def]
    return parse_inventory(text, environ={f"DGXCLUSTER_{k}": v for k, v in env.items()})


def pairs(argv: list[str], flag: str) -> list[str]:
    return [argv[i + 1] for i, a in enumerate(argv) if a == flag]


def test_head_docker_run_has_dgx_defaults_labels_and_fabric_addresses() -> None:
    i = inv()
    argv = plan.docker_run(i, "spark1", PATHS, IMAGE, "cafe" * 4)
    assert argv[:5] == ["docker", "run", "-d", "--name", "dgxc-spark-head"]
    assert pairs(argv, "--label") == ["dgxcluster.cluster=spark", "dgxcluster.role=head",
                                      "dgxcluster.node=spark1", "dgxcluster.config=cafecafecafecafe",
                                      "dgxcluster.executor=ray"]
    assert pairs(argv, "--network") == ["host"] and pairs(argv, "--ipc") == ["host"]
    assert pairs(argv, "--shm-size") == ["10.24g"] and pairs(argv, "--gpus") == ["all"]
    assert pairs(argv, "--device") == ["/dev/infiniband"]
    assert pairs(argv, "--cap-add") == ["IPC_LOCK"] and pairs(argv, "--ulimit") == ["memlock=-1"]
    assert pairs(argv, "-v") == [
        "/home/nvidia/.cache/huggingface:/root/.cache/huggingface",
        "/home/nvidia/.local/state/dgxcluster/spark/logs:/var/log/dgxcluster"]
    assert pairs(argv, "--env-file") == ["/home/nvidia/.local/state/dgxcluster/spark/env/head.env"]
    env = dict(e.split("=", 1) for e in pairs(argv, "-e"))
    assert env["VLLM_HOST_IP"] == "192.168.100.10"
    assert env["NCCL_IB_HCA"] == "rocep1s0f1,roceP2p1s0f1"
    assert env["NCCL_SOCKET_IFNAME"] == env["GLOO_SOCKET_IFNAME"] == "enp1s0f1np1"
    image_at = argv.index(IMAGE)
    assert argv[image_at + 1:] == ["ray", "start", "--head", "--block",
                                   "--node-ip-address=192.168.100.10", "--port=6379",
                                   "--dashboard-port=8265", "--metrics-export-port=8080"]


def test_worker_joins_the_head_on_the_fabric() -> None:
    argv = plan.docker_run(inv(), "spark2", PATHS, IMAGE, "x")
    assert "dgxc-spark-worker" in argv
    tail = argv[argv.index(IMAGE) + 1:]
    assert tail == ["ray", "start", "--block", "--address=192.168.100.10:6379",
                    "--node-ip-address=192.168.100.11", "--metrics-export-port=8080"]
    env = dict(e.split("=", 1) for e in pairs(argv, "-e"))
    assert env["VLLM_HOST_IP"] == "192.168.100.11" and env["MASTER_ADDR"] == "192.168.100.10"


def test_testbed_style_container_options() -> None:
    text = SPARKS + "container: {gpus: none, devices: [], ulimits: {}, shm_size: 1g, env: {A: b}}\n" \
        "ray: {num_gpus: 1}\n"
    argv = plan.docker_run(inv(text), "spark2", PATHS, IMAGE, "x")
    assert "--gpus" not in argv and "--device" not in argv and "--ulimit" not in argv
    assert "A=b" in pairs(argv, "-e")
    assert argv[-1] == "--num-gpus=1"


def test_secrets_never_on_the_command_line_only_in_the_env_file() -> None:
    i = inv()
    cmds = plan.node_commands(i, "spark1", PATHS, IMAGE, "x", {"HF_TOKEN": TOKEN})
    line = to_command_line(cmds.docker_run)
    assert TOKEN.reveal() not in line
    assert render_env_file(cmds.env_values) == f"HF_TOKEN={TOKEN.reveal()}\n".encode()
    assert "HF_TOKEN" not in line


def test_container_env_order_and_overrides() -> None:
    text = (SPARKS + "fabric: {nccl_env: {NCCL_NET_PLUGIN: none}}\n"
            "container: {env: {NCCL_IB_GID_INDEX: '1'}}\n")
    env = container_env(inv(text), "spark2")
    assert env["NCCL_NET_PLUGIN"] == "none"
    assert env["NCCL_IB_GID_INDEX"] == "1"  # container.env wins
    assert env["RAY_memory_monitor_refresh_ms"] == "0"
    assert env["UCX_NET_DEVICES"] == env["TP_SOCKET_IFNAME"] == env["OMPI_MCA_btl_tcp_if_include"]


def test_vllm_serve_command_and_detached_exec() -> None:
    i = inv()
    assert plan.serve_command(i) == [
        "vllm", "serve", "Qwen/Qwen3-30B-A3B-FP8", "--tensor-parallel-size", "2",
        "--distributed-executor-backend", "ray", "--host", "0.0.0.0", "--port", "8000",
        "--max-model-len", "32768", "--gpu-memory-utilization", "0.8", "--enforce-eager"]
    ex = plan.serve_exec(i)
    assert ex[:4] == ["docker", "exec", "-d", "dgxc-spark-head"]
    assert ex[4:6] == ["sh", "-c"] and ex[7:9] == ["sh", "/var/log/dgxcluster"]
    assert ex[9:] == plan.serve_command(i)
    assert plan.gpus_needed(inv(SERVE__PIPELINE_PARALLEL_SIZE="2", RAY__NUM_GPUS="2")) == 4


def test_missing_model_is_a_usage_error() -> None:
    import pytest

    from dgxcluster.errors import UsageError

    bare = "nodes:\n  - {name: a, host: a, fabric_ip: 10.0.0.1}\n"
    with pytest.raises(UsageError, match=r"serve\.model"):
        plan.serve_command(inv(bare))


def test_config_hash_tracks_what_shapes_the_cluster_only() -> None:
    base = plan.config_hash(inv(), IMAGE)
    assert len(base) == plan.CONFIG_HASH_LEN
    assert base == plan.config_hash(inv(), IMAGE)
    assert base == plan.config_hash(inv(SERVE__READY_TIMEOUT_S="60", RAY__START_TIMEOUT_S="5"),
                                    IMAGE)
    assert base != plan.config_hash(inv(SERVE__MAX_MODEL_LEN="4096"), IMAGE)
    assert base != plan.config_hash(inv(), IMAGE.replace("0123", "9999"))
    # whether this shell exports the token does not change the config; the names configured do
    assert base != plan.config_hash(inv(SECRETS__ENV='["HF_TOKEN","OTHER_TOKEN"]'), IMAGE)
    assert TOKEN.reveal() not in base


def test_endpoint_and_curl_use_the_management_address() -> None:
    i = inv(SERVE__SERVED_MODEL_NAME="qwen")
    assert endpoint.api_url(i) == "http://spark1.local:8000/v1"
    curl = endpoint.curl_example(i, plan.model_id(i))
    assert curl.startswith("curl -s http://spark1.local:8000/v1/chat/completions")
    assert '"model": "qwen"' in curl


def test_an_ipv6_head_gets_a_listening_address_it_is_reached_at() -> None:
    v6 = SPARKS.replace("host: spark1.local", "host: fd00::10")
    argv = plan.serve_command(inv(v6))
    assert argv[argv.index("--host") + 1] == "::"  # vLLM's 0.0.0.0 socket is IPv4 only
    assert plan.config_hash(inv(v6), IMAGE) != plan.config_hash(inv(), IMAGE)
    # an IPv4 head keeps the configured (default) address, and the config hash it had
    assert plan.serve_command(inv())[plan.serve_command(inv()).index("--host") + 1] == "0.0.0.0"
    assert plan.config_hash(inv(), IMAGE) == plan.config_hash(inv(SERVE__HOST="0.0.0.0"), IMAGE)


# The stand-in's parsing of what start passes: tests/unit/test_vllm_standin_cli.py


def test_native_argv_per_rank_as_vllms_multi_node_docs_run_it() -> None:
    i = inv(SERVE__EXECUTOR="native")
    common = ["--tensor-parallel-size", "2", "--distributed-executor-backend", "mp",
              "--nnodes", "2"]
    rank0 = plan.serve_command(i, "spark1")
    assert rank0 == ["vllm", "serve", "Qwen/Qwen3-30B-A3B-FP8", *common, "--node-rank", "0",
                     "--master-addr", "192.168.100.10", "--master-port", "29501",
                     "--host", "0.0.0.0", "--port", "8000", "--max-model-len", "32768",
                     "--gpu-memory-utilization", "0.8", "--enforce-eager"]
    assert plan.serve_command(i) == rank0  # the head's, by default
    rank1 = plan.serve_command(i, "spark2")
    assert rank1[:rank1.index("--host")] == ["vllm", "serve", "Qwen/Qwen3-30B-A3B-FP8", *common,
                                             "--node-rank", "1", "--master-addr",
                                             "192.168.100.10", "--master-port", "29501",
                                             "--headless"]
    # each node's container runs its rank under the launcher (pid and exit status recorded)
    argv = plan.docker_run(i, "spark2", PATHS, IMAGE, "x")
    tail = argv[argv.index(IMAGE) + 1:]
    assert tail[:2] == ["sh", "-c"] and tail[3:5] == ["sh", "/var/log/dgxcluster"]
    assert tail[5:] == rank1
    assert "dgxcluster.executor=native" in pairs(argv, "--label")
    assert plan.head_ports(i) == {8000: "vLLM's API (serve.port)",
                                  29501: "vLLM rank 0's --master-port (serve.master_port)"}
    assert "ray" not in " ".join(argv)


def test_the_executor_enters_the_config_hash_only_when_native() -> None:
    ray = plan.config_hash(inv(), IMAGE)
    assert ray == plan.config_hash(inv(SERVE__EXECUTOR="ray", SERVE__MASTER_PORT="29600"), IMAGE)
    native = plan.config_hash(inv(SERVE__EXECUTOR="native"), IMAGE)
    assert native != ray
    assert native != plan.config_hash(inv(SERVE__EXECUTOR="native", SERVE__MASTER_PORT="29600"),
                                      IMAGE)
