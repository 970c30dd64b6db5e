"""HTTP from the operator's machine to vLLM on the head: the one HTTP stack dgxcluster uses.

It is the standard library's `http.client`, chosen over httpx on purpose:
- `status` asks the endpoint on its hot path; importing httpx (and building its TLS context)
  costs about 0.3 s more than `http.client` on the 2-core CI machine;
- the endpoint is plain HTTP/1.1 on the cluster's own network: no TLS, HTTP/2 or pooling
  is needed, and a streamed chat completion is a chunked body read line by line;
- `http.client` never reads HTTP(S)_PROXY/NO_PROXY from the environment (what httpx needs
  `trust_env=False` for), so an operator's corporate proxy cannot swallow requests to the
  nodes;
- an IPv6 host (`http://[fd00::1]:8000`) needs nothing special: `urlsplit` unbrackets it
  and `http.client` brackets it again in the Host header.

Failures are OSErrors: ConnectionRefusedError when nothing listens, another OSError
(timeouts, unreachable hosts, a malformed answer) otherwise; never anything else.
"""

from __future__ import annotations

import http.client
import io
import json
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

#: How much of a body is kept when it is read whole (an error page, /v1/models).
MAX_BODY = 1 << 20


#: timeout -> a connected byte stream to the server (a socket, an SSH channel): how a
#: request reaches a server this machine cannot connect to itself (`core.endpointroute`).
Opener = Callable[[float], Any]


class _Raw(io.RawIOBase):
    """The reading side of a `_StreamSocket`, under the io.BufferedReader `makefile` gives
    (http.client reads chunked bodies with `peek`, which an SSH channel's own file lacks)."""

    def __init__(self, owner: _StreamSocket) -> None:
        self._owner = owner

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._owner.stream.recv(len(buffer))
        buffer[:len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self._owner.unref()
        super().close()


class _StreamSocket:
    """A stream (`remote.connection.Stream`: sendall, recv, settimeout, close) as the socket
    http.client wants. As with a real socket, `close()` while a response still reads from
    its file (http.client hands a closing connection to the response) waits for that file."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self._files = 0
        self._closing = False

    def sendall(self, data: bytes) -> None:
        self.stream.sendall(data)

    def makefile(self, mode: str) -> io.BufferedReader:
        self._files += 1
        return io.BufferedReader(_Raw(self))

    def settimeout(self, timeout: float | None) -> None:
        self.stream.settimeout(timeout)

    def unref(self) -> None:
        self._files -= 1
        self._close_if_done()

    def close(self) -> None:
        self._closing = True
        self._close_if_done()

    def _close_if_done(self) -> None:
        if self._closing and self._files <= 0:
            self.stream.close()


class _Opened(http.client.HTTPConnection):
    """An HTTP/1.1 connection over a stream `opener` gives, instead of a TCP connect."""

    def __init__(self, host: str, port: int, timeout: float, opener: Opener) -> None:
        super().__init__(host, port, timeout=timeout)
        self._opener = opener
        self._limit = timeout

    def connect(self) -> None:
        self.sock = _StreamSocket(self._opener(self._limit))


def _connect(url: str, timeout: float,
             opener: Opener | None = None) -> tuple[http.client.HTTPConnection, str]:
    try:
        parts = urlsplit(url)
        port = parts.port or 80
    except ValueError as exc:  # e.g. a port out of range
        raise OSError(f"bad URL {url!r}: {exc}") from None
    if parts.scheme != "http" or not parts.hostname:
        raise OSError(f"bad URL {url!r}: only http://host[:port]/path is supported")
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    if opener is not None:
        return _Opened(parts.hostname, port, timeout, opener), path
    return http.client.HTTPConnection(parts.hostname, port, timeout=timeout), path


def get(url: str, timeout: float, headers: Mapping[str, str] | None = None,
        opener: Opener | None = None) -> tuple[int, str]:
    """GET `url`: (HTTP status, body text, at most MAX_BODY bytes); over `opener`'s stream
    when given (the URL then only names the Host header and the path)."""
    conn, path = _connect(url, timeout, opener)
    try:
        conn.request("GET", path, headers=dict(headers or {}))
        resp = conn.getresponse()
        return resp.status, resp.read(MAX_BODY).decode("utf-8", "replace")
    except http.client.HTTPException as exc:
        raise OSError(f"bad HTTP answer: {exc!r}") from None
    finally:
        conn.close()


class KeepAlive:
    """GETs over one HTTP/1.1 connection kept open between requests to the same server, for
    a caller that asks again and again (`status --watch`: one request per refresh, no TCP
    handshake each time). A connection the server closed while idle is opened again once
    (a GET may be repeated); an answer read only in part closes it. Not thread-safe: one
    caller at a time. `connections` counts the connections it opened."""

    def __init__(self, headers: Mapping[str, str] | None = None,
                 opener: Opener | None = None) -> None:
        self._headers = dict(headers or {})
        self._opener = opener
        self._conn: http.client.HTTPConnection | None = None
        self._server: tuple[str, int] | None = None
        self.connections = 0

    def get(self, url: str, timeout: float) -> tuple[int, str]:
        """As `get`, in the shape `core.endpoint.Getter` takes."""
        fresh, path = _connect(url, timeout, self._opener)
        server = (fresh.host, fresh.port)
        reused = self._conn is not None and self._server == server
        if not reused:
            self.close()
            self._conn, self._server = fresh, server
            self.connections += 1
        try:
            return self._request(path, timeout)
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
            if not reused:
                self.close()
                raise
        self.close()  # the server dropped the idle connection: once more on a new one
        self._conn, self._server = _connect(url, timeout, self._opener)[0], server
        self.connections += 1
        try:
            return self._request(path, timeout)
        except OSError:
            self.close()
            raise

    def _request(self, path: str, timeout: float) -> tuple[int, str]:
        conn = self._conn
        assert conn is not None
        conn.timeout = timeout
        if conn.sock is not None:
            conn.sock.settimeout(timeout)
        try:
            conn.request("GET", path, headers=self._headers)
            resp = conn.getresponse()
            body = resp.read(MAX_BODY)
            if resp.will_close or not resp.isclosed():
                self.close()
            return resp.status, body.decode("utf-8", "replace")
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
            raise
        except http.client.HTTPException as exc:
            self.close()
            raise OSError(f"bad HTTP answer: {exc!r}") from None
        except OSError:
            self.close()
            raise

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
        self._conn = None
        self._server = None


def getter(headers: Mapping[str, str]) -> Callable[[str, float], tuple[int, str]]:
    """`get` with fixed headers (e.g. `Authorization` for an endpoint started with an API
    key), in the shape `core.endpoint.Getter` takes."""
    return lambda url, timeout: get(url, timeout, headers)


@dataclass
class Streamed:
    """An answer whose body is read as it arrives."""

    status: int
    _resp: http.client.HTTPResponse

    def lines(self) -> Iterator[str]:
        """The body line by line (for server-sent events), as the server sends them."""
        try:
            while line := self._resp.readline():
                yield line.decode("utf-8", "replace").rstrip("\r\n")
        except http.client.HTTPException as exc:
            raise OSError(f"bad HTTP answer: {exc!r}") from None

    def text(self) -> str:
        try:
            return self._resp.read(MAX_BODY).decode("utf-8", "replace")
        except http.client.HTTPException as exc:
            raise OSError(f"bad HTTP answer: {exc!r}") from None


@contextmanager
def post_json(url: str, body: object, timeout: float,
              headers: Mapping[str, str] | None = None,
              opener: Opener | None = None) -> Iterator[Streamed]:
    """POST `body` as JSON; the answer's body is read by the caller, inside the `with`."""
    conn, path = _connect(url, timeout, opener)
    try:
        data = json.dumps(body).encode()
        conn.request("POST", path, body=data, headers={
            "Content-Type": "application/json", "Accept": "text/event-stream, application/json",
            **(headers or {})})
        resp = conn.getresponse()
        yield Streamed(resp.status, resp)
    except http.client.HTTPException as exc:
        raise OSError(f"bad HTTP answer: {exc!r}") from None
    finally:
        conn.close()
