"""One error tree for the whole tool.

Library code raises these; only the CLI maps them to exit codes and prints them.
The transport never exits the process and never prints.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence


class DgxClusterError(Exception):
    """Root of every error dgxcluster raises on purpose."""


class InventoryError(DgxClusterError):
    """The inventory (or a setting overriding it) is wrong; nothing was contacted."""

    def __init__(
        self, source: str, problems: Sequence[tuple[str, str] | tuple[str, str, int | None]]
    ) -> None:
        self.source = source
        self.problems: list[tuple[str, str, int | None]] = [
            (p[0], p[1], p[2] if len(p) > 2 else None) for p in problems
        ]
        lines = []
        for path, msg, line in self.problems:
            where = f"{source}:{line}" if line else source
            lines.append(f"{where}: {path}: {msg}" if path else f"{where}: {msg}")
        super().__init__("\n".join(lines))


class UsageError(DgxClusterError):
    """A command-line option or argument is wrong (exit 2)."""

    def __init__(self, message: str, option: str | None = None) -> None:
        self.option = option
        super().__init__(f"{option}: {message}" if option else message)


class ConnectError(DgxClusterError):
    """A node could not be reached or authenticated; nothing ran there."""

    def __init__(self, node: str, reason: str, hint: str | None = None) -> None:
        self.node = node
        self.reason = reason
        self.hint = hint
        text = f"{node}: unreachable: {reason}"
        if hint:
            text += f"\n  fix: {hint}"
        super().__init__(text)


class HostKeyError(ConnectError):
    """The node's host key is unknown or changed, so we refuse to talk to it."""


class SecretLeakError(DgxClusterError):
    """Code tried to put a secret where it could leak (a command line). A bug, caught early."""


class CommandError(DgxClusterError):
    """A remote command exited non-zero where the caller needed it to succeed."""

    def __init__(
        self, node: str, argv: str, exit_code: int, stderr: str, stdout: str = ""
    ) -> None:
        self.node = node
        self.argv = argv
        self.exit_code = exit_code
        self.stderr = stderr
        self.stdout = stdout
        tail = "\n".join((stderr or stdout).strip().splitlines()[-30:])
        text = f"{node}: `{argv}` exited {exit_code}"
        if tail:
            text += "\n" + "\n".join(f"  {line}" for line in tail.splitlines())
        super().__init__(text)


class CommandTimeout(DgxClusterError):
    """A remote command ran past its timeout; the node is named so nobody waits blind."""

    def __init__(self, node: str, argv: str, timeout_s: float) -> None:
        self.node = node
        self.argv = argv
        self.timeout_s = timeout_s
        super().__init__(f"{node}: `{argv}` gave no result within {timeout_s:g}s (timed out)")


class StepError(DgxClusterError):
    """A named step of a larger operation failed; says which step and why."""

    def __init__(self, step: str, message: str, node: str | None = None) -> None:
        self.step = step
        self.node = node
        self.message = message
        where = f"{node}: " if node else ""
        super().__init__(f"{where}step {step!r} failed: {message}")


class NodesFailed(DgxClusterError):
    """Several nodes failed; carries each node's error so none is hidden."""

    def __init__(self, what: str, errors: Mapping[str, BaseException]) -> None:
        self.what = what
        self.errors = dict(errors)
        lines = [f"{what} failed on {len(self.errors)} node(s):"]
        for node, err in sorted(self.errors.items()):
            body = str(err)
            if not body.startswith(node):
                body = f"{node}: {body}"
            lines.extend("  " + line for line in body.splitlines())
        super().__init__("\n".join(lines))

    @property
    def unreachable(self) -> list[str]:
        return sorted(n for n, e in self.errors.items() if isinstance(e, ConnectError))


class LockHeld(DgxClusterError):
    """Another dgxcluster run holds the cluster lock."""


class Cancelled(DgxClusterError):
    """The fan-out this call belonged to was interrupted (Ctrl-C): it starts nothing more.
    Seen only by the abandoned worker threads of that fan-out; the CLI reports the interrupt."""

    def __init__(self, node: str) -> None:
        self.node = node
        super().__init__(f"{node}: interrupted")
