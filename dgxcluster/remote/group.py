"""Fan-out: run a function or a command on many nodes at once and keep every node's outcome.

A `Cluster` holds one connection per node for the whole invocation. `map` runs a per-node
function in a bounded thread pool and returns a GroupResult (value or exception per node):
one node failing never stops or hides the others.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from dgxcluster.errors import CommandTimeout, InventoryError, UsageError
from dgxcluster.remote import scope
from dgxcluster.remote.command import Argv
from dgxcluster.remote.connection import Connection
from dgxcluster.remote.output import DEFAULT_KEEP
from dgxcluster.remote.result import GroupResult, Result
from dgxcluster.secrets import Redactor

if TYPE_CHECKING:
    from dgxcluster.inventory.load import Inventory
    from dgxcluster.inventory.schema import NodeSpec

T = TypeVar("T")
ConnectionFactory = Callable[["NodeSpec"], Connection]
#: Called with (node, stream, line) for live output of fan-out commands.
NodeLineCallback = Callable[[str, str, str], None]
#: Called with (node, stream, block of lines as bytes) for live output too big for lines.
NodeLinesCallback = Callable[[str, str, bytes], None]


def ssh_factory(inventory: Inventory, redactor: Redactor) -> ConnectionFactory:
    """Build SSH connections from the inventory's ssh settings (imports Fabric lazily).
    Nodes behind jump hosts share one checked connection per jump host (remote/jumps.py)."""
    from dgxcluster.remote import route
    from dgxcluster.remote.jumps import Gateways, local_user, ssh_config_lookup
    from dgxcluster.remote.ssh import SshConnection

    known_hosts = inventory.local_path(inventory.ssh.known_hosts)
    identity = inventory.local_path(inventory.ssh.identity_file) if inventory.ssh.identity_file else None
    if identity is not None:
        _check_identity(inventory, identity)
    gateways = Gateways(inventory.ssh, known_hosts, identity)
    lookup = ssh_config_lookup()
    user = local_user()

    def make(spec: NodeSpec) -> Connection:
        return SshConnection(
            spec, inventory.ssh, known_hosts=known_hosts, identity_file=identity, redactor=redactor,
            route=route.resolve(inventory, spec, lookup, user), gateways=gateways,
        )

    return make


def _check_identity(inventory: Inventory, path: Path) -> None:
    """A missing key is bad input (exit 2), named here, not "unreachable" on every node. Checked
    when the SSH connections are set up: loading the inventory does no I/O beyond its file."""
    problem = None
    if not path.exists():
        problem = "no such file"
    elif not path.is_file():
        problem = "not a file"
    elif not os.access(path, os.R_OK):
        problem = "not readable by this user"
    if problem:
        source = str(inventory.source) if inventory.source else "<inventory>"
        raise InventoryError(source, [("ssh.identity_file", f"{problem}: {path} (the SSH private "
                                       "key for every node; fix the path, or remove the key to "
                                       "use your ssh agent and ~/.ssh/id_*)")])


class Cluster:
    """The nodes of one inventory and their connections, for the length of one invocation."""

    def __init__(
        self,
        inventory: Inventory,
        *,
        factory: ConnectionFactory | None = None,
        redactor: Redactor | None = None,
        max_parallel: int | None = None,
    ) -> None:
        self.inventory = inventory
        self.redactor = redactor or Redactor()
        self._factory = factory or ssh_factory(inventory, self.redactor)
        self._max = max_parallel or inventory.ssh.max_parallel
        self._conns: dict[str, Connection] = {}
        self._lock = threading.Lock()

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def names(self) -> list[str]:
        return self.inventory.names

    @property
    def head(self) -> str:
        return self.inventory.head_name

    def select(self, names: Iterable[str] | None) -> list[str]:
        """Validate a --node selection (keeping inventory order); None means every node."""
        if not names:
            return list(self.names)
        wanted = list(dict.fromkeys(names))
        unknown = [n for n in wanted if n not in self.names]
        if unknown:
            raise UsageError(
                f"unknown node {unknown[0]!r} (inventory has: {', '.join(self.names)})", "--node"
            )
        return [n for n in self.names if n in wanted]

    def narrowed(self, inventory: Inventory) -> Cluster:
        """A cluster of `inventory` (this one's, with fewer nodes) reaching its nodes the same
        way, with connections of its own; the caller closes it."""
        return Cluster(inventory, factory=self._factory, redactor=self.redactor,
                       max_parallel=self._max)

    def conn(self, name: str) -> Connection:
        with self._lock:
            c = self._conns.get(name)
            if c is None:
                c = self._factory(self.inventory.node(name))
                self._conns[name] = c
            return c

    def map(
        self,
        fn: Callable[[Connection], T],
        nodes: Sequence[str] | None = None,
        *,
        timeout: float | None = None,
    ) -> GroupResult[T]:
        """Call fn(connection) on every node in parallel; collect a value or error per node.

        `timeout`: seconds each node's call may take, counted from when it starts. Past it
        the node's entry is a CommandTimeout naming the node, its connection is closed
        (which ends the remote operation the call is waiting on) and `map` returns without
        waiting for the call itself.

        Interrupted (Ctrl-C), `map` closes the channels its calls opened, not the
        connections (`scope.py`), and raises at once: what runs next (a rollback) reuses
        the same connections, and a command started outside the fan-out (the cluster lock)
        keeps running.
        """
        targets = list(nodes) if nodes is not None else list(self.names)
        result: GroupResult[T] = GroupResult(order=targets)
        if not targets:
            return result
        pool = ThreadPoolExecutor(
            max_workers=max(1, min(len(targets), self._max)), thread_name_prefix="node"
        )
        futures: dict[Future[T], str] = {}
        started: dict[str, float] = {}
        what = getattr(fn, "__name__", "the node's work")
        calls = scope.Scope()
        try:
            for name in targets:
                futures[pool.submit(self._call, fn, name, started, calls)] = name
            pending = set(futures)
            while pending:
                done, pending = wait(pending, timeout=0.25, return_when=FIRST_COMPLETED)
                for fut in done:
                    name = futures[fut]
                    exc = fut.exception()
                    if exc is not None:
                        result.errors[name] = exc
                    else:
                        result.values[name] = fut.result()
                if timeout is not None:
                    pending -= self._overdue(pending, futures, started, timeout, what, result)
        except BaseException:
            for fut in futures:
                fut.cancel()
            calls.cancel()
            raise
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
        return result

    def _overdue(self, pending: set[Future[T]], futures: dict[Future[T], str],
                 started: dict[str, float], timeout: float, what: str,
                 result: GroupResult[T]) -> set[Future[T]]:
        """The running calls past their time: recorded as timed out, their connections closed."""
        now = time.monotonic()
        late = {f for f in pending if (t := started.get(futures[f])) is not None and now - t > timeout}
        for fut in late:
            name = futures[fut]
            result.errors[name] = CommandTimeout(name, what, timeout)
            with self._lock:
                conn = self._conns.get(name)
            if conn is not None:
                with contextlib.suppress(Exception):  # closing is best effort
                    conn.close()
        return late

    def _call(self, fn: Callable[[Connection], T], name: str, started: dict[str, float],
              calls: scope.Scope) -> T:
        started[name] = time.monotonic()
        with scope.entered(calls):
            scope.check(name)
            return fn(self.conn(name))

    def run(
        self,
        argv: Argv | Callable[[str], Argv],
        nodes: Sequence[str] | None = None,
        *,
        timeout: float | None = None,
        on_line: NodeLineCallback | None = None,
        on_lines: NodeLinesCallback | None = None,
        keep: int = DEFAULT_KEEP,
    ) -> GroupResult[Result]:
        """Run one command (or a per-node command) everywhere; non-zero exits are not errors.
        `on_line` gets (node, stream, line) per line, `on_lines` (node, stream, block of
        lines); each Result keeps the last `keep` bytes of each stream."""

        def one(c: Connection) -> Result:
            cmd = argv(c.node) if callable(argv) else argv
            node = c.node
            line_cb = None if on_line is None else (
                lambda stream, text: on_line(node, stream, text))
            lines_cb = None if on_lines is None else (
                lambda stream, block: on_lines(node, stream, block))
            return c.run(cmd, timeout=timeout, on_line=line_cb, on_lines=lines_cb, keep=keep)

        return self.map(one, nodes)

    def close(self) -> None:
        with self._lock:
            conns = list(self._conns.values())
            self._conns.clear()
        for c in conns:
            with contextlib.suppress(Exception):  # closing is best effort
                c.close()

