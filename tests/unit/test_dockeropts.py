"""`container.*` values checked for what Docker makes of them (inventory/dockergpus.py,
dockeropts.py), against docker/cli's own parsing and tests (opts/gpus.go + gpus_test.go,
cli/command/container/opts.go + opts_test.go TestValidateDevice, go-units ulimit/size, moby
ParseMountRaw and NormalizeLegacyCapabilities), and the argv `docker run` gets."""

from __future__ import annotations

import shlex

import pytest

from dgxcluster.core.dockerrun import Run, docker_run
from dgxcluster.errors import InventoryError
from dgxcluster.inventory import parse_inventory
from dgxcluster.inventory.dockergpus import (
    DockerOptionError,
    GpuRequest,
    csv_field,
    csv_record,
    docker_reads,
    read,
    render,
)
from dgxcluster.inventory.dockeropts import (
    check_capability,
    check_device,
    check_ipc,
    check_shm_size,
    extra_arg_problems,
    parse_ulimit,
    ram_in_bytes,
    validate_linux_path,
    volume_target,
)
from dgxcluster.inventory.schema import ContainerSettings
from dgxcluster.remote.command import to_command_line

GPU = ("gpu",)


# -- docker/cli opts/gpus_test.go, ported ----------------------------------------------


@pytest.mark.parametrize("value", ["all", "-1", "count=all", "count=-1"])
def test_gpus_opt_all(value: str) -> None:
    assert docker_reads(value) == GpuRequest(count=-1, capabilities=(GPU,))


def test_gpus_opt_invalid_count() -> None:
    with pytest.raises(DockerOptionError) as info:
        docker_reads("count=invalid-integer")
    assert str(info.value) == ('invalid count (invalid-integer): value must be either "all" or an '
                               "integer: invalid syntax")


@pytest.mark.parametrize("value", [
    'driver=nvidia,"capabilities=compute,utility","options=foo=bar,baz=qux"',
    '1,driver=nvidia,"capabilities=compute,utility","options=foo=bar,baz=qux"',
    'count=1,driver=nvidia,"capabilities=compute,utility","options=foo=bar,baz=qux"',
    'driver=nvidia,"capabilities=compute,utility","options=foo=bar,baz=qux",count=1',
])
def test_gpus_opts(value: str) -> None:
    assert docker_reads(value) == GpuRequest(
        driver="nvidia", count=1, capabilities=(("compute", "utility", "gpu"),),
        options=(("baz", "qux"), ("foo", "bar")))


# -- what docker makes of the value, and what we send instead ------------------


def test_device_list_unquoted_is_one_device_plus_a_count_to_docker() -> None:
    """`--gpus device=0,1`: two CSV fields; the bare `1` is a count. The daemon refuses a
    request with both (moby daemon/nvidia_linux.go getRequestedDevicesIDs)."""
    req = docker_reads("device=0,1")
    assert req.device_ids == ("0",) and req.count == 1


@pytest.mark.parametrize(("written", "argv"), [
    ("all", "all"),
    ("2", "2"),
    ("-1", "all"),
    ("device=0", "device=0"),
    ("device=0,1", '"device=0,1"'),
    ('"device=0,1"', '"device=0,1"'),
    ("device=GPU-8f2e,GPU-1c3a", '"device=GPU-8f2e,GPU-1c3a"'),
    ("count=all,capabilities=compute,utility", 'all,"capabilities=compute,utility"'),
    ("device=0,1,capabilities=compute,utility", '"device=0,1","capabilities=compute,utility"'),
    ("driver=nvidia,options=a=1,b=2", '1,driver=nvidia,"options=a=1,b=2"'),
])
def test_inventory_value_becomes_the_argv_element_docker_reads_as_meant(written: str,
                                                                         argv: str) -> None:
    meant = read(written)
    assert render(meant) == argv
    assert docker_reads(argv) == meant  # docker's own reading of what we send


def test_device_list_means_both_gpus() -> None:
    assert read("device=0,1") == GpuRequest(device_ids=("0", "1"), capabilities=(GPU,))


def test_the_argv_element_carries_its_quotes_through_the_one_quoting_step() -> None:
    argv = docker_run(ContainerSettings(gpus="device=0,1"), Run(name="n", image="img"))
    assert argv[argv.index("--gpus") + 1] == '"device=0,1"'
    # what NVIDIA's docs type at a shell: --gpus '"device=0,1"'
    assert "--gpus '\"device=0,1\"'" in to_command_line(argv)
    assert shlex.split(to_command_line(argv)) == argv


@pytest.mark.parametrize(("value", "message"), [
    ("1,count=2", "gpu request key 'count' can be specified only once"),
    ("driver=a,driver=b", "gpu request key 'driver' can be specified only once"),
    ("foo=bar", "unexpected key 'foo' in 'foo=bar'"),
    ("x", 'invalid count (x): value must be either "all" or an integer: invalid syntax'),
    ("99999999999999999999", "value out of range"),
    ('device="0', 'parse error on line 1, column 8: bare " in non-quoted-field'),
    ('"device=0,1', 'parse error on line 1, column 12: extraneous or missing " in quoted-field'),
    ('"device=0"x', 'parse error on line 1, column 10: extraneous or missing " in quoted-field'),
    ("", "EOF"),
    ("all,", "invalid count ()"),
])
def test_docker_refusals_word_for_word(value: str, message: str) -> None:
    with pytest.raises(DockerOptionError) as info:
        docker_reads(value)
    assert message in str(info.value)


def test_repeated_bare_counts_are_accepted_by_docker_as_the_last_one() -> None:
    # seen[] holds the bare text, not "count": docker/cli's own behaviour
    assert docker_reads("1,2").count == 2


@pytest.mark.parametrize(("value", "message"), [
    ("count=2,device=0", "cannot set both Count and DeviceIDs"),
    ("0", "write `none`"),
    ("count=0", "write `none`"),
    ("device=", "empty GPU ID"),
    ("capabilities=compute,foo", "no device driver offers capability foo"),
])
def test_the_inventory_refuses_what_the_daemon_would(value: str, message: str) -> None:
    with pytest.raises(DockerOptionError, match=message):
        read(value)


def test_csv_helpers_match_go() -> None:
    assert csv_record('a,"b,c","d""e",') == ["a", "b,c", 'd"e', ""]
    assert csv_field("a,b") == '"a,b"' and csv_field('q"') == '"q"""' and csv_field("x") == "x"
    assert csv_field(" lead") == '" lead"' and csv_field("") == ""


# -- the rest of container.* ----------------------------------------------------------


@pytest.mark.parametrize("path", ["/home", "/home:/home", "/home:/something/else", "/with space",
                                  "/home:/with space", "relative:/absolute-path",
                                  "hostPath:/containerPath:r", "/hostPath:/containerPath:rw",
                                  "/hostPath:/containerPath:mrw"])
def test_docker_cli_device_paths_valid(path: str) -> None:
    validate_linux_path(path)


@pytest.mark.parametrize(("path", "message"), [
    ("", "bad format for path: "), ("./", "./ is not an absolute path"),
    ("../", "../ is not an absolute path"), ("/:../", "../ is not an absolute path"),
    ("/:path", "path is not an absolute path"), (":", "bad format for path: :"),
    ("/tmp:", " is not an absolute path"), (":test", "bad format for path: :test"),
    (":/test", "bad format for path: :/test"), ("tmp:", " is not an absolute path"),
    (":test:", "bad format for path: :test:"), ("::", "bad format for path: ::"),
    (":::", "bad format for path: :::"), ("/tmp:::", "bad format for path: /tmp:::"),
    (":/tmp::", "bad format for path: :/tmp::"), ("path:ro", "ro is not an absolute path"),
    ("path:rr", "rr is not an absolute path"), ("a:/b:ro", "bad mode specified: ro"),
    ("a:/b:rr", "bad mode specified: rr"),
])
def test_docker_cli_device_paths_invalid(path: str, message: str) -> None:
    """docker/cli cli/command/container/opts_test.go TestValidateDevice, case for case."""
    with pytest.raises(DockerOptionError) as info:
        validate_linux_path(path)
    assert str(info.value) == message


def test_device_host_side_must_be_absolute_and_cdi_names_pass() -> None:
    check_device("/dev/infiniband")
    check_device("nvidia.com/gpu=all")
    with pytest.raises(DockerOptionError, match="host device relative is not an absolute"):
        check_device("relative:/absolute-path")


@pytest.mark.parametrize(("value", "parsed"), [
    ("memlock=-1", ("memlock", -1, -1)), ("nofile=1024:2048", ("nofile", 1024, 2048)),
    ("memlock=-1:-1", ("memlock", -1, -1)), ("stack=67108864", ("stack", 67108864, 67108864)),
    ("nofile=1024:-1", ("nofile", 1024, -1)),
])
def test_ulimits_docker_accepts(value: str, parsed: tuple[str, int, int]) -> None:
    assert parse_ulimit(value) == parsed


@pytest.mark.parametrize(("value", "message"), [
    ("memlock=unlimited", 'strconv.ParseInt: parsing "unlimited": invalid syntax'),
    ("memlock=unlimited:unlimited", 'parsing "unlimited": invalid syntax'),
    ("as=1", "invalid ulimit type: as"),
    ("memlock", "invalid ulimit argument: memlock"),
    ("nofile=1:2:3", "too many limit value arguments - 1:2:3, can only have up to two"),
    ("nofile=2048:1024", "ulimit soft limit must be less than or equal to hard limit: 2048 > 1024"),
    ("nofile=-1:1024", "soft: -1 (unlimited), hard: 1024"),
])
def test_ulimits_docker_refuses(value: str, message: str) -> None:
    with pytest.raises(DockerOptionError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_ulimit(value)


@pytest.mark.parametrize(("text", "size"), [
    ("10.24g", int(10.24 * (1 << 30))), ("1g", 1 << 30), ("1GiB", 1 << 30), ("512m", 512 << 20),
    ("512MB", 512 << 20), ("100", 100), ("100b", 100), ("2 g", 2 << 30),
])
def test_shm_sizes_in_binary_units_like_go_units(text: str, size: int) -> None:
    assert ram_in_bytes(text) == size


@pytest.mark.parametrize("text", ["-1", "1x", "g", "1.2.3g", "1ib", "1gbb", "ten"])
def test_bad_shm_sizes(text: str) -> None:
    with pytest.raises(DockerOptionError, match="invalid size"):
        ram_in_bytes(text)


def test_zero_shm_would_quietly_become_64_mib() -> None:
    with pytest.raises(DockerOptionError, match="64 MiB default"):
        check_shm_size("0")


@pytest.mark.parametrize(("spec", "target"), [
    ("/srv/data:/data", "/data"), ("/srv/data:/data:ro", "/data"), ("~/x:/x:ro,z", "/x"),
    ("named-vol:/cache", "/cache"), ("/anon", "/anon"), ("/a:/b/./c/", "/b/c"),
    ("/a:/b:rshared", "/b"),
])
def test_volumes_docker_accepts(spec: str, target: str) -> None:
    assert volume_target(spec) == target


@pytest.mark.parametrize(("spec", "message"), [
    ("", "invalid empty volume spec"),
    ("/a::/b", "empty section between colons"),
    ("/a:/b:ro:x", "too many colons"),
    ("/a:ro", "invalid volume specification: '/a:ro'"),
    ("/a:/b:bogus", "invalid mode: bogus"),
    ("/a:/b:ro,rw", "invalid mode: ro,rw"),
    ("/a:rel", "mount path must be absolute"),
    ("/a:/", "destination can't be '/'"),
    ("./rel:/x", "includes invalid characters for a local volume name"),
    ("/x:ro", "invalid volume specification"),
])
def test_volumes_docker_refuses(spec: str, message: str) -> None:
    with pytest.raises(DockerOptionError, match=message.replace("(", r"\(")):
        volume_target(spec)


def test_capabilities_are_normalised_then_checked_like_moby() -> None:
    for cap in ("IPC_LOCK", "cap_sys_nice", " net_admin ", "ALL", "all"):
        check_capability(cap)
    with pytest.raises(DockerOptionError, match='unknown capability: "CAP_IPC_LOCKED"'):
        check_capability("IPC_LOCKED")


def test_ipc_modes() -> None:
    for mode in ("host", "private", "shareable", "container:dgxc-x-head"):
        check_ipc(mode)
    for mode, message in (("none", "no /dev/shm"), ("hots", "invalid IPC mode: hots"),
                          ("container:", "invalid IPC mode")):
        with pytest.raises(DockerOptionError, match=message):
            check_ipc(mode)


def test_extra_args_values_are_checked_in_every_form() -> None:
    assert extra_arg_problems(["--runtime", "nvidia", "--privileged", "--gpus", '"device=0,1"',
                               "-v/a:/b", "--ulimit=nofile=1024:2048"]) == []
    found = extra_arg_problems(["--gpus=device=0,1", "--ulimit", "memlock=unlimited",
                                "-v", "/a:rel", "--shm-size=lots", "--cap-add", "NOPE"])
    assert [i for i, _ in found] == [0, 2, 4, 5, 7]
    assert "plus a count of 1" in found[0][1] and "set container.gpus" in found[0][1]


# -- through the inventory: refused at load, the key named -----------------------------

BASE = "nodes:\n  - {name: a, host: h1, fabric_ip: 10.0.0.1}\ncontainer:\n"


@pytest.mark.parametrize(("yaml", "key", "text"), [
    ("  gpus: count=2,device=0\n", "container.gpus", "cannot set both Count and DeviceIDs"),
    ("  ulimits: {memlock: unlimited}\n", "container.ulimits", "memlock: strconv.ParseInt"),
    ("  shm_size: 10GB2\n", "container.shm_size", "invalid size"),
    ("  devices: [/dev/infiniband, infiniband]\n", "container.devices[1]", "not an absolute path"),
    ("  cap_add: [IPC_LOCK, SYS_NICEST]\n", "container.cap_add[1]", "unknown capability"),
    ("  volumes: ['/srv/m:/root/.cache/huggingface']\n", "container.volumes",
     "Duplicate mount point: /root/.cache/huggingface"),
    ("  volumes: ['/a:/x', '/b:/x/']\n", "container.volumes", "item 1"),
    ("  volumes: ['~/w:work']\n", "container.volumes[0]", "mount path must be absolute"),
    ("  ipc: none\n", "container.ipc", "no /dev/shm"),
    ("  extra_args: [--gpus, 'device=0,1']\n", "container.extra_args", "set container.gpus"),
])
def test_refused_at_load_naming_the_key(yaml: str, key: str, text: str) -> None:
    with pytest.raises(InventoryError) as info:
        parse_inventory(BASE + yaml, "inv.yaml", environ={})
    msg = str(info.value)
    assert msg.startswith("inv.yaml:") and f"{key}: " in msg and text in msg, msg


def test_dgx_defaults_and_the_testbed_values_pass() -> None:
    inv = parse_inventory(BASE + "  gpus: device=0,1\n", "inv.yaml", environ={})
    assert inv.container.gpus_arg == '"device=0,1"'
    parse_inventory(BASE + "  gpus: none\n  devices: []\n  shm_size: 1g\n  ulimits: {}\n",
                    "inv.yaml", environ={})
