"""Per-invocation CLI state and the one place errors become exit codes and messages."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NoReturn, TypeVar

import typer

from dgxcluster.cli.exitcodes import exit_code_for, exit_code_of

if TYPE_CHECKING:
    from dgxcluster.core.session import Session
    from dgxcluster.core.steps import Outcome
    from dgxcluster.inventory.load import Inventory
    from dgxcluster.recipes.merge import Merged

F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class CliState:
    inventory_path: Path | None = None
    verbose: int = 0
    log_format: str = "console"
    #: `start --recipe`: the recipe to serve this time instead of serve.recipe
    recipe: str | None = None
    _inventory: Inventory | None = field(default=None, repr=False)
    _merged: Merged[Inventory] | None = field(default=None, repr=False)

    def inventory(self) -> Inventory:
        """Load the inventory once (exit 2 with a clear message if it is wrong), with the
        recipe it names (or `recipe`) merged under its own keys: every command sees one cluster."""
        if self._inventory is None:
            from dgxcluster.inventory.load import load_inventory

            inv = load_inventory(self.inventory_path)
            if self.recipe or inv.serve.recipe:
                from dgxcluster.recipes.merge import resolve

                self._merged = resolve(inv, self.recipe)
                inv = self._merged.inventory
            self._inventory = inv
        return self._inventory

    def use(self, inventory: Inventory) -> None:
        """This invocation's inventory as an option changed it (`start --executor`)."""
        self._inventory = inventory
        if self._merged is not None:
            from dataclasses import replace

            self._merged = replace(self._merged, inventory=inventory)

    def merged(self) -> Merged[Inventory]:
        """The inventory with where each serve setting came from (recipe, inventory, default)."""
        inv = self.inventory()
        if self._merged is None:
            from dgxcluster.recipes.merge import plain

            self._merged = plain(inv)
        return self._merged

    def session(self, command: str) -> Session:
        from dgxcluster.core.session import Session
        from dgxcluster.runlog import configure
        from dgxcluster.secrets import Redactor

        inv = self.inventory()
        red = Redactor()
        configure(self.verbose, self.log_format, red)
        return Session.open(inv, command=command, redactor=red)


def state(ctx: typer.Context) -> CliState:
    obj = ctx.find_root().obj
    if not isinstance(obj, CliState):  # pragma: no cover - set by the root callback
        obj = CliState()
        ctx.find_root().obj = obj
    return obj


def finish(outcomes: Iterable[Outcome]) -> NoReturn:
    """End the command with the exit code its per-node outcomes call for (`exitcodes`)."""
    raise typer.Exit(exit_code_of(outcomes))


def errors_to_exit(fn: F) -> F:
    """Turn dgxcluster errors and Ctrl-C into a message on stderr and the documented exit code."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from dgxcluster.errors import DgxClusterError

        try:
            return fn(*args, **kwargs)
        except DgxClusterError as exc:
            _error(str(exc))
            raise typer.Exit(exit_code_for(exc)) from None
        except KeyboardInterrupt:
            _error("interrupted")
            raise typer.Exit(exit_code_for(KeyboardInterrupt())) from None

    return wrapper  # type: ignore[return-value]


def _error(text: str) -> None:
    first, _, rest = text.partition("\n")
    sys.stderr.write(f"error: {first}\n")
    if rest:
        sys.stderr.write(rest + "\n")
    sys.stderr.flush()


def interrupt_on_signals(sigint: Literal["always", "terminal"] = "always") -> None:
    """SIGTERM and SIGHUP (a closed terminal) raise KeyboardInterrupt, so a command stops the
    way Ctrl-C stops it (a start rolls back, locks are released).

    SIGINT's handling: a program started with SIGINT ignored (a non-interactive shell's
    background job, `nohup ... &`, some CI runners) inherits that, and Python then never
    raises KeyboardInterrupt on it. `sigint="always"` gives SIGINT its default back in any
    case: the followers an operator ends with Ctrl-C (`status --watch`, `logs --follow`,
    `bench`). `sigint="terminal"` does so only when the command runs attached to a terminal as
    its foreground job (`attached_to_terminal`), so an operator's Ctrl-C always works, while a
    detached run keeps what whoever started it chose: `start`, `stop`, `build`, `model sync`.
    """
    import signal

    def interrupt(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    if sigint == "always" or attached_to_terminal():
        signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGHUP, interrupt)


#: The process group a Ctrl-C typed on our terminal reaches: ours, or, in a warm worker
#: (cli/warm.py), its client's, which forwards the signal.
TERMINAL_PGRP: int | None = None


def attached_to_terminal(fd: int = 0) -> bool:
    """Whether `fd` (stdin) is a terminal whose foreground process group is this process's:
    where a Ctrl-C typed on it is sent to us. A non-interactive shell's background job has
    /dev/null as stdin, and an interactive shell's runs in a process group of its own."""
    import os

    try:
        return os.isatty(fd) and os.tcgetpgrp(fd) == (TERMINAL_PGRP or os.getpgrp())
    except OSError:
        return False
