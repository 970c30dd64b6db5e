"""The one `docker run` builder: the inventory's container settings once, each use's parts."""

from __future__ import annotations

from dgxcluster.core.dockerrun import Run, docker_run
from dgxcluster.inventory.schema import ContainerSettings
from dgxcluster.remote.command import to_command_line

DGX = ContainerSettings(extra_args=["--runtime", "nvidia"], env={"A": "b"})


def pairs(argv: list[str], flag: str) -> list[str]:
    return [argv[i + 1] for i, a in enumerate(argv) if a == flag]


def test_accelerated_container_gets_every_setting_once() -> None:
    argv = docker_run(DGX, Run(name="n", image="img:ctx-1", command=["ray", "start"], detach=True,
                               labels={"k": "v"}, env={"E": "1"}, env_file="/s/e.env",
                               volumes=["/h:/c"]))
    assert argv[:5] == ["docker", "run", "-d", "--name", "n"]
    assert pairs(argv, "--label") == ["k=v"] and pairs(argv, "--network") == ["host"]
    assert pairs(argv, "--ipc") == ["host"] and pairs(argv, "--shm-size") == ["10.24g"]
    assert pairs(argv, "--gpus") == ["all"] and pairs(argv, "--device") == ["/dev/infiniband"]
    assert pairs(argv, "--cap-add") == ["IPC_LOCK"] and pairs(argv, "--ulimit") == ["memlock=-1"]
    assert pairs(argv, "-v") == ["/h:/c"] and pairs(argv, "--env-file") == ["/s/e.env"]
    assert pairs(argv, "-e") == ["E=1"]  # container.env is the caller's to merge (container_env)
    assert argv[-5:] == ["--runtime", "nvidia", "img:ctx-1", "ray", "start"]
    assert "--rm" not in argv and "--entrypoint" not in argv


def test_a_helper_container_gets_none_of_the_gpu_side() -> None:
    argv = docker_run(DGX, Run(name="dl", image="img", command=["download", "m"], entrypoint="hf",
                               remove=True, user="1000:1000", accelerated=False))
    assert argv == ["docker", "run", "--rm", "--name", "dl", "--network", "host",
                    "--user", "1000:1000", "--entrypoint", "hf", "img", "download", "m"]


def test_values_stay_single_arguments() -> None:
    argv = docker_run(ContainerSettings(gpus="none", devices=[], cap_add=[], ulimits={}, ipc=None),
                      Run(name="n", image="img", env={"P": "a b; rm -rf /"}, command=["x y"]))
    assert "P=a b; rm -rf /" in argv and argv[-1] == "x y"
    assert "'P=a b; rm -rf /'" in to_command_line(argv)  # quoted once, at the boundary
    assert not {"--gpus", "--device", "--cap-add", "--ulimit", "--ipc"} & set(argv)
