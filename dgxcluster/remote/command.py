"""Commands are argv lists; this is the one place they become a remote command line.

Quoting happens here and only here (`to_command_line`). A `Secret` in argv is refused:
a secret on a command line is visible in `ps` on the node. `for_display` masks secrets
for logs and dry-run output.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable, Mapping, Sequence

from dgxcluster.errors import SecretLeakError
from dgxcluster.secrets import MASK, Secret

Arg = str | Secret
Argv = Sequence[Arg]


def to_command_line(argv: Argv) -> str:
    """Quote argv for the remote shell. Refuses secrets and empty commands."""
    if not argv:
        raise ValueError("empty command")
    parts: list[str] = []
    for arg in argv:
        if isinstance(arg, Secret):
            raise SecretLeakError(
                f"refusing to put secret {arg.name} on a remote command line; "
                "send it in an 0600 env-file instead"
            )
        if not isinstance(arg, str):
            raise TypeError(f"argv elements must be str, got {type(arg).__name__}: {arg!r}")
        if "\0" in arg:
            raise ValueError("argv element contains a NUL byte")
        parts.append(arg)
    return shlex.join(parts)


def for_display(argv: Argv) -> str:
    """argv as a copy-pasteable line with every secret masked."""
    return shlex.join(MASK if isinstance(a, Secret) else str(a) for a in argv)


def shell(script: str, *args: str) -> list[str]:
    """Run a fixed shell snippet with values passed as positional args ($1, $2, ...).

    Values never get spliced into the script text, so they cannot be interpreted by the shell.
    """
    return ["sh", "-c", script, "sh", *args]


def with_env(env: Mapping[str, str], argv: Argv) -> list[Arg]:
    """Prefix argv with `env K=V ...` for non-secret variables."""
    for key, val in env.items():
        if isinstance(val, Secret):
            raise SecretLeakError(f"refusing to pass secret {key} as a command-line variable")
    return ["env", *(f"{k}={v}" for k, v in env.items()), *argv]


def joined(*commands: Iterable[Arg]) -> list[Arg]:
    """Concatenate argv fragments (e.g. a base command and options)."""
    out: list[Arg] = []
    for c in commands:
        out.extend(c)
    return out
