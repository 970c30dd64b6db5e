"""Secret values (HF_TOKEN and friends) and the redactor that keeps them out of output.

A `Secret` never renders its value by accident: str(), repr() and f-strings give a mask.
The remote layer refuses a Secret in argv, so the only way to a node is an 0600 file.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

MASK = "******"

#: Environment variables that are always treated as secrets when present.
DEFAULT_SECRET_NAMES: tuple[str, ...] = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")
#: What a Hugging Face access token looks like. Masked in everything dgxcluster prints or
#: logs even when this shell does not know the value (a token read back from a node, from
#: `docker inspect`, from a program that prints its own environment).
HF_TOKEN_SHAPE = re.compile(r"hf_[A-Za-z0-9]{20,}")


def mask_token_shapes(text: str) -> str:
    """Replace anything shaped like a Hugging Face token with the mask."""
    return HF_TOKEN_SHAPE.sub(MASK, text) if "hf_" in text else text


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
