"""Secret values (HF_TOKEN and friends) and all redaction: the one place that knows what a
secret looks like.

A `Secret` never renders its value by accident: str(), repr() and f-strings give a mask.
The remote layer refuses a Secret in argv, so the only way to a node is an 0600 file.
`Redactor` masks the values this operator knows; `CollectedRedactor` also masks what is
read back from nodes and may hold secrets this operator does not know (see there).
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

MASK = "******"

#: Environment variables that are always treated as secrets when present.
DEFAULT_SECRET_NAMES: tuple[str, ...] = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")
#: What a Hugging Face access token looks like (`hf_` + 20 or more letters and digits).
#: Masked in everything dgxcluster prints, logs or collects even when this shell does not
#: know the value (a token read back from a node, from `docker inspect`, from a program
#: that prints its own environment), and refused as a value in the inventory.
HF_TOKEN_PATTERN = r"hf_[A-Za-z0-9]{20,}"  # noqa: S105 - a shape, not a value
HF_TOKEN_SHAPE = re.compile(HF_TOKEN_PATTERN)
#: Words that make an upper-case variable name a secret (MY_API_KEY, WANDB_TOKEN, ...): the
#: inventory refuses values under such names, collected text has their assignments masked.
SECRET_NAME_WORDS = ("TOKEN", "SECRET", "PASSWORD", "PASSWD", "API_KEY", "ACCESS_KEY",
                     "PRIVATE_KEY")
#: A collected line longer than this without a newline is redacted in pieces (binary data).
MAX_LINE = 1 << 20


def mask_token_shapes(text: str) -> str:
    """Replace anything shaped like a Hugging Face token with the mask."""
    return HF_TOKEN_SHAPE.sub(MASK, text) if "hf_" in text else text


_HF_TOKEN_SHAPE_BYTES = re.compile(HF_TOKEN_PATTERN.encode())


def mask_token_shapes_bytes(data: bytes) -> bytes:
    """`mask_token_shapes` for raw output (exec's blocks): a token read back from a node is
    masked on the terminal though this machine never knew it."""
    return _HF_TOKEN_SHAPE_BYTES.sub(MASK.encode(), data) if b"hf_" in data else data


class Secret:
    """A string that masks itself; call `reveal()` only where the value must leave."""

    __slots__ = ("_name", "_value")

    def __init__(self, value: str, name: str = "secret") -> None:
        self._value = value
        self._name = name

    @property
    def name(self) -> str:
        return self._name

    def reveal(self) -> str:
        return self._value

    def __str__(self) -> str:
        return MASK

    def __repr__(self) -> str:
        return f"Secret({self._name}={MASK})"

    def __format__(self, spec: str) -> str:
        return MASK

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("Secret", self._value))

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("Secret values are not picklable")


@dataclass
class Redactor:
    """Replaces every known secret value with a mask in any text it is given."""

    values: set[str] = field(default_factory=set)

    def add(self, *secrets: Secret | str) -> None:
        for s in secrets:
            raw = s.reveal() if isinstance(s, Secret) else s
            if raw and len(raw) >= 4:
                self.values.add(raw)

    def __call__(self, text: str) -> str:
        for raw in sorted(self.values, key=len, reverse=True):
            if raw in text:
                text = text.replace(raw, MASK)
        return text

    def display(self, text: str) -> str:
        """For what people read (terminal, log files): known values and token shapes. Data
        read back from nodes keeps `__call__` (known values only), so a file that merely
        looks like a token is not altered."""
        return mask_token_shapes(self(text))

    def redact_bytes(self, data: bytes) -> bytes:
        for raw in sorted(self.values, key=len, reverse=True):
            enc = raw.encode()
            if enc in data:
                data = data.replace(enc, MASK.encode())
        return data


def parse_env_file(text: str) -> dict[str, str]:
    """Parse a KEY=VALUE file (blank lines and # comments allowed, optional quotes)."""
    out: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export ") :].lstrip()
        key, sep, value = line.partition("=")
        if not sep:
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        out[key.strip()] = value
    return out


def load_secrets(
    names: Iterable[str],
    secrets_file: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> dict[str, Secret]:
    """Collect the named secrets from the environment, then from the secrets file.

    The environment wins. The file must not be readable by others, as ssh insists for keys.
    """
    env = os.environ if environ is None else environ
    found: dict[str, Secret] = {}
    file_values: dict[str, str] = {}
    if secrets_file is not None and secrets_file.exists():
        mode = secrets_file.stat().st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            from dgxcluster.errors import InventoryError

            raise InventoryError(
                str(secrets_file),
                [("", f"secrets file is readable by others (mode {oct(mode & 0o777)}); "
                  f"run: chmod 600 {secrets_file}")],
            )
        file_values = parse_env_file(secrets_file.read_text())
    for name in names:
        if env.get(name):
            found[name] = Secret(env[name], name)
        elif file_values.get(name):
            found[name] = Secret(file_values[name], name)
    return found


def render_env_file(values: Mapping[str, str | Secret]) -> bytes:
    """Render values as a docker --env-file (one KEY=VALUE per line, no quoting)."""
    lines = []
    for key, val in values.items():
        raw = val.reveal() if isinstance(val, Secret) else val
        if "\n" in raw or "\r" in raw:
            raise ValueError(f"env value for {key} contains a newline; env-files cannot hold it")
        lines.append(f"{key}={raw}")
    return ("\n".join(lines) + "\n").encode()


# -- what is collected from nodes ------------------------------------------------------------
# The session's redactor only knows the secrets present where dgxcluster runs. A container
# started with `--env-file` still shows the values in `docker inspect` (`Config.Env`), and a
# program may print its own token, even when the operator collecting logs has no HF_TOKEN.
# So collected bytes are also masked wherever a variable *named* like a secret is assigned
# (`HF_TOKEN=...`, `"HF_TOKEN": "..."`, `HF_TOKEN: ...`), and wherever a token shape appears.

MASK_BYTES = MASK.encode()


def _name_pattern(names: Iterable[str]) -> bytes:
    explicit = sorted({n for n in names if n}, key=len, reverse=True)
    words = "|".join(SECRET_NAME_WORDS)
    generic = rf"[A-Z0-9_]*(?:{words})[A-Z0-9_]*"
    alts = [f"(?i:{re.escape(n)})" for n in explicit] + [generic]
    name = "(?:" + "|".join(alts) + ")"
    # NAME, then `=` or `:` (optionally around quotes, JSON-escaped or not), then the value
    sep = r"""(?:\\?["']?\s*[:=]\s*\\?["']?)"""
    value = r"""[^\s"'\\,;}\]]+"""
    return rf"(?<![A-Za-z0-9_])(?P<name>{name})(?P<sep>{sep})(?P<value>{value})".encode()


def _masked(m: re.Match[bytes]) -> bytes:
    if m.group("shape") is not None:
        return MASK_BYTES
    return m.group("name") + m.group("sep") + MASK_BYTES


class CollectedRedactor:
    """Masks secrets in collected bytes: known values, secret-named assignments, token shapes."""

    def __init__(self, names: Iterable[str] = (), values: Redactor | None = None) -> None:
        self.values = values or Redactor()
        all_names = [n for n in (*names, *DEFAULT_SECRET_NAMES) if n]
        # one pass over a line: a secret-named assignment, or else a token shape
        self._pattern = re.compile(_name_pattern(all_names) + b"|(?P<shape>"
                                   + HF_TOKEN_PATTERN.encode() + b")")
        # only lines holding one of these can match: everything else is skipped at C speed
        words = {w.encode() for w in SECRET_NAME_WORDS} | {b"hf_"}
        for n in all_names:
            words |= {n.encode(), n.lower().encode(), n.upper().encode()}
        self._triggers = sorted(words)

    def redact(self, data: bytes) -> bytes:
        data = self.values.redact_bytes(data)
        spans = self._candidate_lines(data)
        if not spans:
            return data
        out: list[bytes] = []
        pos = 0
        for start, end in spans:
            out.append(data[pos:start])
            out.append(self._pattern.sub(_masked, data[start:end]))
            pos = end
        out.append(data[pos:])
        return b"".join(out)

    def _candidate_lines(self, data: bytes) -> list[tuple[int, int]]:
        """(start, end) of every line holding a trigger word, sorted and merged."""
        spans: list[tuple[int, int]] = []
        for word in self._triggers:
            i = data.find(word)
            while i >= 0:
                start = data.rfind(b"\n", 0, i) + 1
                end = data.find(b"\n", i)
                end = len(data) if end < 0 else end
                spans.append((start, end))
                i = data.find(word, end)
        if not spans:
            return []
        spans.sort()
        merged = [spans[0]]
        for start, end in spans[1:]:
            last_start, last_end = merged[-1]
            if start <= last_end:
                merged[-1] = (last_start, max(last_end, end))
            else:
                merged.append((start, end))
        return merged

    def text(self, text: str) -> str:
        return self.redact(text.encode("utf-8", "surrogateescape")).decode(
            "utf-8", "surrogateescape"
        )

    def writer(self, write: Callable[[bytes], object]) -> LineRedactingWriter:
        return LineRedactingWriter(self, write)


class LineRedactingWriter:
    """Redacts a byte stream line by line, so a secret split across chunks is still caught."""

    def __init__(self, redactor: CollectedRedactor, write: Callable[[bytes], object]) -> None:
        self._r = redactor
        self._write = write
        self._pending = b""
        self.bytes_in = 0

    def feed(self, data: bytes) -> None:
        self.bytes_in += len(data)
        buf = self._pending + data
        cut = buf.rfind(b"\n")
        if cut < 0:
            if len(buf) > MAX_LINE:
                self._write(self._r.redact(buf))
                buf = b""
            self._pending = buf
            return
        self._write(self._r.redact(buf[: cut + 1]))
        self._pending = buf[cut + 1 :]

    def close(self) -> None:
        if self._pending:
            self._write(self._r.redact(self._pending))
            self._pending = b""
