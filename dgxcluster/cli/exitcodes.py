"""Exit codes, mapped here and nowhere else: from the error tree, and from per-node outcomes.

0 everything succeeded, 1 something failed, 2 bad input (inventory or options),
3 a node was unreachable, 130 interrupted. A command ends either by raising (an error,
`exit_code_for`) or with its per-node `Outcome`s (`exit_code_of`); it never picks a number.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from dgxcluster.errors import ConnectError, InventoryError, NodesFailed, UsageError

if TYPE_CHECKING:
    from dgxcluster.core.steps import Outcome

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
EXIT_INTERRUPTED = 130


def exit_code_for(err: BaseException) -> int:
    if isinstance(err, (InventoryError, UsageError)):
        return EXIT_USAGE
    if isinstance(err, ConnectError):
        return EXIT_UNREACHABLE
    if isinstance(err, NodesFailed):
        return EXIT_UNREACHABLE if err.unreachable else EXIT_FAILED
    if isinstance(err, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    return EXIT_FAILED


def exit_code_of(outcomes: Iterable[Outcome]) -> int:
    """3 if any node was unreachable, else 1 if any failed, else 0."""
    from dgxcluster.core.steps import Status, worst

    return {Status.UNREACHABLE: EXIT_UNREACHABLE, Status.FAILED: EXIT_FAILED}.get(
        worst(outcomes), EXIT_OK)  # type: ignore[arg-type]
