"""Exit codes, mapped from the error tree here and nowhere else.

0 everything succeeded, 1 something failed, 2 bad input (inventory or options),
3 a node was unreachable, 130 interrupted.
"""

from __future__ import annotations

from dgxcluster.errors import ConnectError, InventoryError, NodesFailed, UsageError

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
