"""A console for reports: the terminal's width on a terminal, wide lines elsewhere.

rich wraps at 80 columns when stdout is a pipe, which breaks table cells mid-word in CI
logs and in anything that greps the output; reports are better left wide there.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console

PIPE_WIDTH = 200


def report_console() -> Console:
    from rich.console import Console

    probe = Console()
    width = None if probe.is_terminal else PIPE_WIDTH
    return Console(highlight=False, soft_wrap=False, width=width)
