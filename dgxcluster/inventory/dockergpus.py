"""`--gpus`: what Docker makes of a value, and the one argv element that says what we mean.

Docker's CLI reads the value of `--gpus` as ONE CSV record (docker/cli `opts/gpus.go`,
`GpuOpts.Set`, with Go's `encoding/csv`): fields `driver=`, `count=`, `device=`,
`capabilities=`, `options=`; a field without `=` is a count; `all` is -1. So
`--gpus device=0,1` is two fields, `device=0` and a count of 1, and the daemon refuses the
pair ("cannot set both Count and DeviceIDs on device request", moby `daemon/nvidia_linux.go`).
The value has to reach docker as the argv element `"device=0,1"`, quotes included.

`docker_reads` is docker's own reading (ported, errors word for word). `read` is the
inventory's: docker's, except that the fields docker would split off a list (`device=0,1`,
`capabilities=compute,utility`, `options=a=1,b=2`) stay in that list, since docker's reading
of them can only fail. `render` writes a request back as the one CSV record docker reads
into exactly that request (tests check the round trip).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

KEYS = ("driver", "count", "device", "capabilities", "options")
#: What the NVIDIA device driver registers with the daemon (moby `daemon/nvidia_linux.go`:
#: "gpu", "nvidia" and containerd's NVIDIA capabilities).
NVIDIA_CAPABILITIES = frozenset({"gpu", "nvidia", "compute", "compat32", "graphics", "utility",
                                 "video", "display"})
_INT = re.compile(r"[+-]?[0-9]+")
_INT64_MAX = (1 << 63) - 1


class DockerOptionError(ValueError):
    """A value Docker would refuse; the message is Docker's own where it has one."""


@dataclass(frozen=True)
class GpuRequest:
    """docker's `container.DeviceRequest` for one `--gpus` value."""

    driver: str = ""
    count: int = 0
    device_ids: tuple[str, ...] | None = None
    capabilities: tuple[tuple[str, ...], ...] = ()
    options: tuple[tuple[str, str], ...] = ()  # sorted (a map in Go)


# -- Go's encoding/csv, for one line -----------------------------------------------------


def csv_record(text: str) -> list[str]:
    """The first record of `text` as Go's `csv.NewReader(...).Read()` returns it (default
    settings: comma, strict quotes). Callers refuse line breaks first: this reads one line."""
    if text == "":
        raise DockerOptionError("EOF")
    fields: list[str] = []
    i, n = 0, len(text)
    while True:
        if i < n and text[i] == '"':
            buf: list[str] = []
            j = i + 1
            while True:
                q = text.find('"', j)
                if q < 0:
                    raise DockerOptionError(_csv_error(len(text.encode()) + 1,
                                                       'extraneous or missing " in quoted-field'))
                buf.append(text[j:q])
                after = q + 1
                if after < n and text[after] == '"':
                    buf.append('"')
                    j = after + 1
                    continue
                if after < n and text[after] == ",":
                    fields.append("".join(buf))
                    i = after + 1
                    break
                if after >= n:
                    fields.append("".join(buf))
                    return fields
                raise DockerOptionError(_csv_error(len(text[:after].encode()),
                                                   'extraneous or missing " in quoted-field'))
            continue
        comma = text.find(",", i)
        field = text[i:] if comma < 0 else text[i:comma]
        bare = field.find('"')
        if bare >= 0:
            raise DockerOptionError(_csv_error(len(text[:i + bare].encode()) + 1,
                                               'bare " in non-quoted-field'))
        fields.append(field)
        if comma < 0:
            return fields
        i = comma + 1


def _csv_error(column: int, what: str) -> str:
    return f"parse error on line 1, column {column}: {what}"


def csv_field(field: str) -> str:
    """`field` as Go's `csv.Writer` writes it: quoted (inner quotes doubled) when it holds a
    comma, a quote or a line break, starts with white space, or is `\\.`."""
    needs = field == r"\." or any(c in field for c in ',"\r\n') or (field[:1].isspace())
    return '"' + field.replace('"', '""') + '"' if needs else field


# -- docker's reading --------------------------------------------------------------------


def parse_count(s: str) -> int:
    """docker/cli `parseCount`: "all" is -1, else a Go `strconv.Atoi`."""
    if s == "all":
        return -1
    why = "invalid syntax"
    if _INT.fullmatch(s):
        value = int(s)
        if -_INT64_MAX - 1 <= value <= _INT64_MAX:
            return value
        why = "value out of range"
    raise DockerOptionError(f'invalid count ({s}): value must be either "all" or an integer: {why}')


def docker_reads(value: str) -> GpuRequest:
    """What `docker run --gpus VALUE` sends the daemon (docker/cli `GpuOpts.Set`)."""
    return _request(csv_record(value))


def _request(fields: list[str]) -> GpuRequest:
    driver, count = "", 0
    device_ids: tuple[str, ...] | None = None
    caps: tuple[tuple[str, ...], ...] = ()
    options: dict[str, str] = {}
    seen: set[str] = set()
    for field in fields:
        key, eq, val = field.partition("=")
        if key in seen:
            raise DockerOptionError(f"gpu request key '{key}' can be specified only once")
        seen.add(key)
        if not eq:
            seen.add("count")
            count = parse_count(key)
            continue
        if key == "driver":
            driver = val
        elif key == "count":
            count = parse_count(val)
        elif key == "device":
            device_ids = tuple(val.split(","))
        elif key == "capabilities":
            caps = ((*val.split(","), "gpu"),)
        elif key == "options":
            try:
                pairs = csv_record(val)
            except DockerOptionError as exc:
                raise DockerOptionError(f"failed to read gpu options: {exc}") from None
            options = {k: v for k, _, v in (p.partition("=") for p in pairs)}
        else:
            raise DockerOptionError(f"unexpected key '{key}' in '{field}'")
    if "count" not in seen and device_ids is None:
        count = 1
    return GpuRequest(driver, count, device_ids, caps or (("gpu",),),
                      tuple(sorted(options.items())))


# -- the inventory's reading, and back -------------------------------------------------


def read(value: str) -> GpuRequest:
    """`container.gpus` as the user means it, refused where the daemon would refuse it."""
    fields = csv_record(value)
    merged: list[str] = []
    for f in fields:
        if merged and _continues(merged[-1], f):
            merged[-1] += "," + f
        else:
            merged.append(f)
    req = _request(merged)
    if req.device_ids is not None and req.count != 0:
        raise DockerOptionError("cannot set both Count and DeviceIDs on device request "
                                "(the daemon's words): give either a count or device=")
    if req.device_ids is not None and any(not d.strip() for d in req.device_ids):
        raise DockerOptionError("device= names an empty GPU ID")
    if req.device_ids is None and req.count == 0:
        raise DockerOptionError("a count of 0 asks docker for no GPU: write `none`")
    if req.driver in ("", "nvidia"):
        unknown = [c for group in req.capabilities for c in group if c not in NVIDIA_CAPABILITIES]
        if unknown:
            raise DockerOptionError(
                f"no device driver offers capability {', '.join(unknown)} (the daemon would say "
                f"\"could not select device driver\"); NVIDIA's: "
                f"{', '.join(sorted(NVIDIA_CAPABILITIES - {'gpu', 'nvidia'}))}")
    return req


def _continues(previous: str, field: str) -> bool:
    """Is `field` the rest of the list that `previous` started (docker would split it off)?"""
    key = previous.partition("=")[0]
    if key == "device":
        return "=" not in field
    if key == "capabilities":
        return "=" not in field and not _is_count(field)
    if key == "options":
        return "=" in field and field.partition("=")[0] not in KEYS
    return False


def _is_count(s: str) -> bool:
    try:
        parse_count(s)
    except DockerOptionError:
        return False
    return True


def render(req: GpuRequest) -> str:
    """The `--gpus` argv element docker reads back into `req`: `all`, `2`, `"device=0,1"`."""
    fields: list[str] = []
    if req.device_ids is not None:
        fields.append("device=" + ",".join(req.device_ids))
    else:
        fields.append("all" if req.count == -1 else str(req.count))
    if req.driver:
        fields.append(f"driver={req.driver}")
    caps = req.capabilities[0][:-1] if req.capabilities else ()  # docker appends "gpu"
    if caps:
        fields.append("capabilities=" + ",".join(caps))
    if req.options:
        fields.append("options=" + ",".join(csv_field(f"{k}={v}") for k, v in req.options))
    return ",".join(csv_field(f) for f in fields)
