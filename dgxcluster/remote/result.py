"""What a remote command returns, per node, and what a fan-out returns across nodes."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from dgxcluster.errors import CommandError, ConnectError, DgxClusterError, NodesFailed

T = TypeVar("T")


@dataclass(frozen=True)
class Result:
    """One command's outcome on one node. The caller decides if non-zero is an error.

    `stdout`/`stderr` are what was kept of each stream: its last bytes, when the command
    printed more than the transport keeps; `dropped` then says how many bytes of which
    stream came before them (`truncated`).
    """

    node: str
    argv: str  # for display: quoted, secrets masked
    exit_code: int
    stdout: str
    stderr: str
    duration_s: float
    dropped: dict[str, int] = field(default_factory=dict)

    @property
    def truncated(self) -> bool:
        return any(self.dropped.values())

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    def check(self) -> Result:
        """Return self if the command succeeded, else raise CommandError with the whole result."""
        if self.exit_code != 0:
            raise CommandError(self.node, self.argv, self.exit_code, self.stderr, self.stdout)
        return self

    def to_json(self) -> dict[str, object]:
        return {
            "node": self.node,
            "exit_code": self.exit_code,
            "stdout": self.stdout,
            "stderr": self.stderr,
            "duration_s": round(self.duration_s, 3),
            "truncated": self.truncated,
            "dropped_bytes": {"stdout": self.dropped.get("stdout", 0),
                              "stderr": self.dropped.get("stderr", 0)},
        }


@dataclass
class GroupResult(Generic[T]):
    """Per-node outcome of a fan-out: a value or the exception that node raised.

    One node failing never hides the others; `raise_for_failures` raises one combined error.
    """

    values: dict[str, T] = field(default_factory=dict)
    errors: dict[str, BaseException] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)

    def __getitem__(self, node: str) -> T | BaseException:
        if node in self.values:
            return self.values[node]
        return self.errors[node]

    def __iter__(self) -> Iterator[str]:
        return iter(self.order)

    def __len__(self) -> int:
        return len(self.order)

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def unreachable(self) -> dict[str, ConnectError]:
        return {n: e for n, e in self.errors.items() if isinstance(e, ConnectError)}

    @property
    def failed(self) -> dict[str, BaseException]:
        return {n: e for n, e in self.errors.items() if not isinstance(e, ConnectError)}

    def raise_for_failures(self, what: str) -> None:
        if not self.errors:
            return
        if len(self.errors) == 1:
            (err,) = self.errors.values()
            if isinstance(err, DgxClusterError):
                raise err
        raise NodesFailed(what, self.errors)
