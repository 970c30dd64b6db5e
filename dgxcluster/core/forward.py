"""A local port carried to the endpoint through the head's SSH connection (what `ssh -L`
does), for a program dgxcluster runs that can only be given a URL (llama-benchy).

dgxcluster's own HTTP goes through `core.endpointroute` one request at a time; a separate
program needs a port. `LocalForward` listens on 127.0.0.1 (never another address: the
forward carries the API key's requests) on a free port and, for each connection accepted,
opens a stream with `open_stream` (a `direct-tcpip` channel of the head's SSH connection,
`EndpointRoute.opener()`) and copies bytes both ways until either side closes. Streams are
opened with a timeout, then read without one: a generation may stream for minutes.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Any

LOOPBACK = "127.0.0.1"
CHUNK = 65536


class LocalForward:
    """`with LocalForward(open_stream) as fwd:` -> `fwd.url_host` to give the program."""

    def __init__(self, open_stream: Callable[[float], Any], timeout: float = 15.0) -> None:
        self._open = open_stream
        self._timeout = timeout
        self._listener: socket.socket | None = None
        self._lock = threading.Lock()
        self._open_socks: list[Any] = []
        self.failures: list[str] = []  # why streams could not be opened (for the report)

    @property
    def port(self) -> int:
        assert self._listener is not None, "LocalForward used outside its `with`"
        return int(self._listener.getsockname()[1])

    @property
    def url_host(self) -> str:
        """`127.0.0.1:PORT`, for an http:// URL."""
        return f"{LOOPBACK}:{self.port}"

    def __enter__(self) -> LocalForward:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.bind((LOOPBACK, 0))
        listener.listen(128)
        self._listener = listener
        threading.Thread(target=self._accept, name="forward-accept", daemon=True).start()
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Stop listening and end every carried connection (idempotent)."""
        if self._listener is not None:
            with contextlib.suppress(OSError):  # wakes the accept() under way (Linux)
                self._listener.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                self._listener.close()
        with self._lock:
            socks, self._open_socks = self._open_socks, []
        for s in socks:
            with contextlib.suppress(Exception):
                s.close()

    def _accept(self) -> None:
        assert self._listener is not None
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            threading.Thread(target=self._carry, args=(client,), name="forward-conn",
                             daemon=True).start()

    def _carry(self, client: socket.socket) -> None:
        try:
            stream = self._open(self._timeout)
        except OSError as exc:
            self.failures.append(str(exc))
            client.close()
            return
        stream.settimeout(None)
        with self._lock:
            self._open_socks += [client, stream]
        back = threading.Thread(target=_pump, args=(stream, client), name="forward-back",
                                daemon=True)
        back.start()
        _pump(client, stream)
        back.join()
        with self._lock:
            self._open_socks = [s for s in self._open_socks if s not in (client, stream)]


def _pump(src: Any, dst: Any) -> None:
    """Copy until `src` ends, then close both (the other direction ends with them)."""
    try:
        while data := src.recv(CHUNK):
            dst.sendall(data)
    except (OSError, EOFError):
        pass
    finally:
        for s in (dst, src):
            with contextlib.suppress(Exception):
                s.close()
