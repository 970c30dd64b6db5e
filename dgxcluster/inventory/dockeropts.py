"""What Docker makes of each `container.*` value: its own parsing, ported, so a value it would
refuse (or quietly turn into something else) is refused at load, naming the key.

Sources (docker/cli master 2026-08, moby, go-units; docs/DEVELOPING.md "Sources"):
- `--shm-size`: `opts.MemBytes` -> go-units `RAMInBytes` (binary units, `b` optional);
  the daemon turns 0 into its 64 MiB default ("SHM size can not be less than 0" below 0).
- `--ulimit`: go-units `ParseUlimit` (`name=soft[:hard]`, integers, -1 unlimited, a fixed
  table of names; "unlimited" is not a number to it).
- `--device`: cli/command/container/opts.go `validateLinuxPath` / `parseLinuxDevice`
  (`HOST[:CONTAINER][:rwm]`) or a CDI name `vendor.com/class=name`.
- `-v`: internal/volumespec `Parse` (the CLI), then moby's Linux `ParseMountRaw`
  (`SOURCE:TARGET[:MODE]`, modes, absolute target, named-volume names, duplicates).
- `--cap-add`: docker/cli `NormalizeCapability` + moby `NormalizeLegacyCapabilities`
  ("unknown capability").
- `--ipc`: moby `IpcMode.Valid` ("invalid IPC mode").
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterable, Sequence

from dgxcluster.inventory.dockergpus import DockerOptionError, docker_reads

#: Where dgxcluster mounts things itself in the Ray containers: a volume there is refused
#: (the daemon: "Duplicate mount point").
CONTAINER_HF_HOME = "/root/.cache/huggingface"
CONTAINER_LOG_DIR = "/var/log/dgxcluster"
RESERVED_TARGETS = {CONTAINER_HF_HOME: "container.hf_cache", CONTAINER_LOG_DIR: "start's vLLM log"}

# -- --shm-size ----------------------------------------------------------------------------

_SIZE = re.compile(r"([0-9]+(?:\.[0-9]+)?) ?([kmgtp]?)(i?b)?", re.IGNORECASE)
_BINARY = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}


def ram_in_bytes(text: str) -> int:
    """go-units `RAMInBytes`, restricted to the forms every Docker release reads alike
    (`10.24g`, `512m`, `1GiB`, `1073741824`)."""
    m = _SIZE.fullmatch(text)
    if m is None or (m.group(3) and m.group(3).lower() == "ib" and not m.group(2)):
        raise DockerOptionError(f"invalid size: '{text}' (a number with an optional unit "
                                "b, k, m, g, t or p; binary: 1g = 1024 MiB)")
    size = int(float(m.group(1)) * _BINARY[m.group(2).lower()])
    if size >= 1 << 63:
        raise DockerOptionError(f"invalid size: '{text}' (too large)")
    return size


def check_shm_size(text: str) -> int:
    size = ram_in_bytes(text)
    if size == 0:
        raise DockerOptionError("0 makes docker use its 64 MiB default, too small for NCCL and "
                                "vLLM: give a size (DGX default 10.24g)")
    return size


# -- --ulimit ------------------------------------------------------------------------------

#: go-units `ulimitNameMapping` ("as" is left out there, so docker refuses it).
ULIMIT_NAMES = frozenset({"core", "cpu", "data", "fsize", "locks", "memlock", "msgqueue", "nice",
                          "nofile", "nproc", "rss", "rtprio", "rttime", "sigpending", "stack"})
_INT = re.compile(r"[+-]?[0-9]+")


def _parse_int64(s: str) -> int:
    if not _INT.fullmatch(s):
        raise DockerOptionError(f'strconv.ParseInt: parsing "{s}": invalid syntax '
                                "(docker takes integers only; -1 means unlimited)")
    value = int(s)
    if not -(1 << 63) <= value < 1 << 63:
        raise DockerOptionError(f'strconv.ParseInt: parsing "{s}": value out of range')
    return value


def parse_ulimit(val: str) -> tuple[str, int, int]:
    """go-units `ParseUlimit("name=soft[:hard]")` -> (name, soft, hard), its errors verbatim."""
    name, eq, limits = val.partition("=")
    if not eq:
        raise DockerOptionError(f"invalid ulimit argument: {val}")
    if name not in ULIMIT_NAMES:
        raise DockerOptionError(f"invalid ulimit type: {name} (docker knows "
                                f"{', '.join(sorted(ULIMIT_NAMES))})")
    parts = limits.split(":")
    if len(parts) > 2:
        raise DockerOptionError(f"too many limit value arguments - {limits}, can only have up to "
                                "two, `soft[:hard]`")
    hard = soft = None
    if len(parts) == 2:
        hard = _parse_int64(parts[1])
    soft = _parse_int64(parts[0])
    hard = soft if hard is None else hard
    if hard != -1:
        if soft == -1:
            raise DockerOptionError("ulimit soft limit must be less than or equal to hard limit: "
                                    f"soft: -1 (unlimited), hard: {hard}")
        if soft > hard:
            raise DockerOptionError("ulimit soft limit must be less than or equal to hard limit: "
                                    f"{soft} > {hard}")
    return name, soft, hard


# -- --device ------------------------------------------------------------------------------

_CDI = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9_.-]*[A-Za-z0-9])?/[A-Za-z0-9](?:[A-Za-z0-9_.-]*"
                  r"[A-Za-z0-9])?=[A-Za-z0-9](?:[A-Za-z0-9_.:-]*[A-Za-z0-9])?")


def _device_mode(mode: str) -> bool:
    """docker/cli `validDeviceMode`: a non-empty subset of r, w, m, each once."""
    return bool(mode) and set(mode) <= set("rwm") and len(set(mode)) == len(mode)


def check_device(val: str) -> None:
    """`--device HOST[:CONTAINER][:PERMISSIONS]` (or a CDI name), as docker's CLI checks it;
    and the host side absolute, since the daemon looks it up on the node."""
    if _CDI.fullmatch(val):
        return
    validate_linux_path(val)
    host = val.split(":")[0]
    if not host.startswith("/"):
        raise DockerOptionError(f"host device {host} is not an absolute path (the daemon "
                                "looks it up on the node)")


def validate_linux_path(val: str) -> None:
    """docker/cli `validateLinuxPath(val, validDeviceMode)`, its errors verbatim."""
    if val.count(":") > 2 or val.split(":")[0] == "":
        raise DockerOptionError(f"bad format for path: {val}")
    parts = val.split(":", 2)
    container = parts[0]
    if len(parts) == 2 and not _device_mode(parts[1]):
        container = parts[1]
    elif len(parts) == 3:
        container = parts[1]
        if not _device_mode(parts[2]):
            raise DockerOptionError(f"bad mode specified: {parts[2]}")
    if not container.startswith("/"):
        raise DockerOptionError(f"{container} is not an absolute path")


# -- -v / --volume -------------------------------------------------------------------------

_RW = frozenset({"rw", "ro", "ro-non-recursive", "ro-force-recursive", "rro"})
_LABEL = frozenset({"z", "Z"})
_PROPAGATION = frozenset({"private", "rprivate", "slave", "rslave", "shared", "rshared"})
_CONSISTENCY = frozenset({"consistent", "cached", "delegated"})
_VOLUME_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]+")


def valid_mount_mode(mode: str) -> bool:
    """moby `linuxValidMountMode`: each option known, at most one of each kind."""
    if mode == "":
        return True
    counts = [0] * 5
    for o in mode.split(","):
        kinds = (o in _RW, o in _LABEL, o in _PROPAGATION, o == "nocopy", o in _CONSISTENCY)
        if not any(kinds):
            return False
        counts[kinds.index(True)] += 1
    return max(counts) <= 1


def volume_target(spec: str) -> str:
    """The container path of `-v spec` after the checks docker's CLI and daemon make; the
    source may be `~` or `~/...` (dgxcluster expands it on each node)."""
    if spec == "":
        raise DockerOptionError("invalid empty volume spec")
    sections = spec.split(":")
    for i, section in enumerate(sections):  # in the order docker/cli's volumespec meets them
        if section == "":
            raise DockerOptionError(f"invalid spec: {spec}: empty section between colons")
        if i == 2 and len(sections) > 3:
            raise DockerOptionError(f"invalid spec: {spec}: too many colons")
    bad = f"invalid volume specification: '{spec}'"
    if len(sections) == 2 and valid_mount_mode(sections[1]):
        raise DockerOptionError(bad)
    source, target, mode = ("", sections[0], "") if len(sections) == 1 else \
        (sections[0], sections[1], sections[2] if len(sections) == 3 else "")
    if not valid_mount_mode(mode):
        raise DockerOptionError(f"invalid mode: {mode}")
    if not target.startswith("/"):
        raise DockerOptionError(f"{bad}: invalid mount path: '{target}' mount path must be absolute")
    if target.rstrip("/") == "":
        raise DockerOptionError(f"{bad}: invalid specification: destination can't be '/'")
    bind = source.startswith("/") or source == "~" or source.startswith("~/")
    if source and not bind and not _VOLUME_NAME.fullmatch(source):
        raise DockerOptionError(
            f'create {source}: "{source}" includes invalid characters for a local volume name, '
            'only "[a-zA-Z0-9][a-zA-Z0-9_.-]" are allowed. If you intended to pass a host '
            "directory, use absolute path")
    if not source and "ro" in mode.split(","):
        raise DockerOptionError("must not set ReadOnly mode when using anonymous volumes")
    return "/" + posixpath.normpath(target).lstrip("/")  # Go's path.Clean


def duplicate_targets(specs: Sequence[str]) -> list[tuple[int, str]]:
    """(index, why) for each volume whose container path another mount already takes."""
    taken = dict(RESERVED_TARGETS)
    out: list[tuple[int, str]] = []
    for i, spec in enumerate(specs):
        target = volume_target(spec)
        if target in taken:
            out.append((i, f"Duplicate mount point: {target} (the daemon's words; "
                           f"{taken[target]} is mounted there)"))
        taken.setdefault(target, f"volumes[{i}]")
    return out


# -- --cap-add, --ipc ------------------------------------------------------------------------

#: The Linux capabilities moby knows (moby/sys/capability `ListKnown`, 0..40).
CAPABILITIES = frozenset({
    "CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID",
    "SETPCAP", "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST", "NET_ADMIN", "NET_RAW",
    "IPC_LOCK", "IPC_OWNER", "SYS_MODULE", "SYS_RAWIO", "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT",
    "SYS_ADMIN", "SYS_BOOT", "SYS_NICE", "SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "MKNOD",
    "LEASE", "AUDIT_WRITE", "AUDIT_CONTROL", "SETFCAP", "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG",
    "WAKE_ALARM", "BLOCK_SUSPEND", "AUDIT_READ", "PERFMON", "BPF", "CHECKPOINT_RESTORE"})


def check_capability(cap: str) -> None:
    norm = cap.strip().upper()
    if norm == "ALL":
        return
    bare = norm.removeprefix("CAP_")
    if bare not in CAPABILITIES:
        raise DockerOptionError(f'unknown capability: "CAP_{bare}"')


def check_ipc(mode: str) -> None:
    """moby `IpcMode.Valid`, less `none`: vLLM and NCCL need a /dev/shm."""
    if mode == "none":
        raise DockerOptionError("none leaves the container no /dev/shm, which NCCL and vLLM "
                                "need: use host (DGX default), private or shareable")
    kind, sep, name = mode.partition(":")
    if mode in ("host", "private", "shareable") or (kind == "container" and sep and name):
        return
    raise DockerOptionError(f"invalid IPC mode: {mode} (host, private, shareable or "
                            "container:NAME)")


# -- container.extra_args: the same options, written by hand -----------------------------


def _check_gpus_raw(value: str) -> None:
    req = docker_reads(value)
    if req.device_ids is not None and req.count != 0:
        raise DockerOptionError(
            f"docker reads {value!r} as device {','.join(req.device_ids)} plus a count of "
            f"{req.count}, which the daemon refuses (\"cannot set both Count and DeviceIDs on "
            f"device request\"): set container.gpus instead (it quotes for docker)")


def _check_ulimit(value: str) -> None:
    parse_ulimit(value)


_CHECKS = {"--gpus": _check_gpus_raw, "--ulimit": _check_ulimit, "--shm-size": ram_in_bytes,
           "--device": check_device, "--cap-add": check_capability, "--ipc": check_ipc,
           "--volume": volume_target, "-v": volume_target}


def extra_arg_problems(args: Sequence[str]) -> list[tuple[int, str]]:
    """(index, why) for each option in `container.extra_args` whose value docker would refuse
    (`--flag value`, `--flag=value`, `-vVALUE`)."""
    out: list[tuple[int, str]] = []
    for i, (flag, value) in _option_values(args):
        try:
            _CHECKS[flag](value)
        except DockerOptionError as exc:
            out.append((i, f"{flag} {value}: {exc}"))
    return out


def _option_values(args: Sequence[str]) -> Iterable[tuple[int, tuple[str, str]]]:
    i = 0
    while i < len(args):
        a = args[i]
        flag, eq, value = a.partition("=")
        if flag in _CHECKS and eq and flag.startswith("--"):
            yield i, (flag, value)
        elif a in _CHECKS and i + 1 < len(args):
            yield i + 1, (a, args[i + 1])
            i += 1
        elif a.startswith("-v") and not a.startswith("--") and len(a) > 2:
            yield i, ("-v", a[3:] if a[2] == "=" else a[2:])
        i += 1
