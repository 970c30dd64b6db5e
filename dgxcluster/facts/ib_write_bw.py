"""`ib_write_bw` (perftest): RDMA write bandwidth over one device, client side or server.

The banner gives `Key : value` pairs (Device, Link type, Mtu, GID index), then a table
`#bytes #iterations BW peak[Gb/sec] BW average[Gb/sec] MsgRate[Mpps]`: one row per size
(`-a`), per interval (`--run_infinitely`), or one. Units are Gb/sec with `--report_gbits`,
else MB/sec (perftest's MB is 2^20 bytes). Both ends print the table.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from dgxcluster.facts import ParseError, content_lines

COMMAND = "ib_write_bw"

_HEAD = re.compile(r"#bytes\s+#iterations\s+BW peak\[(?P<unit>[^\]]+)\]\s+BW average\[[^\]]+\]")
_KV = re.compile(r"^\s*(?P<key>[A-Za-z][A-Za-z .#*_-]*?)\s*:\s*(?P<val>\S.*?)\s*$")
_FAILURES = ("couldn't", "could not", "unable to", "failed", "error", "no such device",
             "not found", "timed out", "unrecognized option")


def argv(device: str, *, port: int, gid_index: int | None, duration_s: int,
         server_ip: str | None = None) -> list[str]:
    """Client when `server_ip` is given, server otherwise; both need the same options."""
    cmd = ["ib_write_bw", "-d", device, "-p", str(port), "-F", "--report_gbits",
           "-D", str(duration_s)]
    if gid_index is not None:
        cmd += ["-x", str(gid_index)]
    if server_ip:
        cmd.append(server_ip)
    return cmd


@dataclass(frozen=True)
class BwRow:
    size: int
    iterations: int
    peak: float
    average: float
    msg_rate_mpps: float


@dataclass
class WriteBw:
    unit: str  # as printed: Gb/sec or MB/sec
    rows: list[BwRow] = field(default_factory=list)
    info: dict[str, str] = field(default_factory=dict)

    @property
    def device(self) -> str | None:
        return self.info.get("Device")

    @property
    def link_type(self) -> str | None:
        return self.info.get("Link type")

    def _gbits(self, value: float) -> float:
        if self.unit.lower().startswith("gb"):
            return value
        if self.unit.upper().startswith("MB"):
            return value * 1048576 * 8 / 1e9
        raise ValueError(self.unit)

    @property
    def average_gbits(self) -> float | None:
        """The sustained figure: mean of the averages at the largest message size."""
        if not self.rows:
            return None
        big = max(r.size for r in self.rows)
        vals = [r.average for r in self.rows if r.size == big]
        return self._gbits(sum(vals) / len(vals))


def parse(text: str) -> WriteBw:
    result: WriteBw | None = None
    info: dict[str, str] = {}
    for line in content_lines(text):
        if m := _HEAD.search(line):
            result = WriteBw(unit=m.group("unit").strip(), info=info)
            continue
        if result is None:
            for part in re.split(r"\s{2,}(?=[A-Z][A-Za-z .#_-]*\s*:)", line.strip()):
                if kv := _KV.match(part):
                    info.setdefault(kv.group("key").strip(), kv.group("val").strip())
            continue
        toks = line.split()
        if len(toks) == 5 and toks[0].isdigit() and toks[1].isdigit():
            try:
                result.rows.append(BwRow(int(toks[0]), int(toks[1]), float(toks[2]),
                                         float(toks[3]), float(toks[4])))
            except ValueError:
                continue
    if result is None or not result.rows:
        lowered = [ln.strip() for ln in content_lines(text) if ln.strip()]
        err = next((ln for ln in lowered if any(f in ln.lower() for f in _FAILURES)), None)
        why = f"the tool said: {err}" if err else "no '#bytes #iterations BW peak' result table"
        raise ParseError(COMMAND, why, text)
    try:
        result.average_gbits  # noqa: B018 - validates the unit
    except ValueError:
        raise ParseError(COMMAND, f"unknown bandwidth unit {result.unit!r}", text) from None
    return result
