"""torch.distributed across nodes as vLLM's multiproc executor uses it, emulated over real TCP
for the testbed (no torch, no GPU): what rank 0 and the `--headless` ranks do before the
model loads, and how they fail.

vLLM (vllm/distributed/parallel_state.py `init_distributed_environment`, with `--nnodes` > 1)
initialises the world process group at `tcp://<--master-addr>:<--master-port>`: rank 0's
worker hosts torch's TCP store there and waits for every rank; the other ranks connect to it
over the network, retrying until the group's timeout. Then (`init_world_group`) every rank
makes a Gloo group for CPU collectives: Gloo's TCP device binds to the address of the
interface named by GLOO_SOCKET_IFNAME (gloo/transport/tcp/device.cc `lookupAddrForIface`),
each rank publishes it through the store, and every pair of ranks connects (connectFullMesh).

Here one process stands for a node's ranks: rank 0's hosts the store (a JSON-lines TCP
server), the headless ones connect to it; each resolves GLOO_SOCKET_IFNAME to its IPv4
address (a missing interface, or one without an IPv4 address, fails as Gloo does), listens
there, and connects to every lower node from that address. The pair sockets stay open: a
node that goes away is seen at once by the others (`lost`), as a failed collective would
show it. Messages are torch's and Gloo's own wording.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

SIOCGIFADDR = 0x8915
GLOO_DEVICE = "/pytorch/third_party/gloo/gloo/transport/tcp/device.cc:84"
RETRY_LOG_S = 30.0


class DistError(RuntimeError):
    """A failure as torch prints it (`torch.distributed.DistNetworkError: ...`)."""


def interface_address(name: str) -> str:
    """The IPv4 address of interface `name`, or Gloo's enforce failure (no such interface,
    or it has no IPv4 address: `lookupAddrForIface` finds no matching entry either way)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            req = fcntl.ioctl(s.fileno(), SIOCGIFADDR, struct.pack("256s", name[:15].encode()))
        except OSError:
            raise DistError(f"RuntimeError: [enforce fail at {GLOO_DEVICE}] ifa != nullptr. "
                            f"Unable to find address for: {name}") from None
    return socket.inet_ntoa(req[20:24])


def _send(sock: socket.socket, obj: dict[str, Any]) -> None:
    sock.sendall((json.dumps(obj) + "\n").encode())


def _recv(sock: socket.socket, buf: bytearray, timeout: float | None) -> dict[str, Any] | None:
    """One JSON line, None at EOF or a reset (the peer is gone)."""
    sock.settimeout(timeout)
    while b"\n" not in buf:
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, BrokenPipeError):
            return None
        if not chunk:
            return None
        buf += chunk
    line, _, rest = bytes(buf).partition(b"\n")
    buf[:] = rest
    return json.loads(line)  # type: ignore[no-any-return]


@dataclass
class Group:
    """This node's place in the world group: `join()` forms it (or raises DistError)."""

    node_rank: int
    nnodes: int
    world_size: int
    master_addr: str
    master_port: int
    timeout_s: float
    log: logging.Logger
    gloo_ifname: str | None = None
    #: set once a peer node is gone (its pair socket closed): who, as a message
    lost: str | None = None
    on_lost: Callable[[str], None] | None = None
    _links: dict[int, socket.socket] = field(default_factory=dict)
    _server: socket.socket | None = None
    _clients: list[socket.socket] = field(default_factory=list)
    _closing: bool = False

    @property
    def local_world_size(self) -> int:
        return self.world_size // self.nnodes

    @property
    def ranks(self) -> list[int]:
        first = self.local_world_size * self.node_rank
        return list(range(first, first + self.local_world_size))

    def join(self) -> None:
        if self.node_rank == 0:
            self._serve_store()
        else:
            self._connect_store()

    # -- rank 0: the TCP store at master_addr:master_port ---------------------------------

    def _serve_store(self) -> None:
        srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            srv.bind(("0.0.0.0", self.master_port))  # noqa: S104 - the TCP store listens on all
        except OSError as exc:
            srv.close()
            name = errno.errorcode.get(exc.errno or 0, "?")
            raise DistError(
                "torch.distributed.DistNetworkError: The server socket has failed to listen on "
                f"any local network address. port: {self.master_port}, useIpv6: false, code: "
                f"-{exc.errno}, name: {name}, message: {(exc.strerror or '').lower()}") from None
        srv.listen(64)
        self._server = srv
        deadline = time.monotonic() + self.timeout_s
        hellos: dict[int, dict[str, Any]] = {}
        bufs: dict[int, bytearray] = {}
        while sum(len(h["ranks"]) for h in hellos.values()) + self.local_world_size < self.world_size:
            left = deadline - time.monotonic()
            if left <= 0:
                joined = self.local_world_size + sum(len(h["ranks"]) for h in hellos.values())
                raise DistError(f"torch.distributed.DistStoreError: Timed out after "
                                f"{int(self.timeout_s) + 1} seconds waiting for clients. "
                                f"{joined}/{self.world_size} clients joined.")
            srv.settimeout(min(left, 1.0))
            try:
                conn, _ = srv.accept()
            except TimeoutError:
                continue
            buf = bytearray()
            hello = _recv(conn, buf, 30.0)
            if hello is None or "hello" not in hello:
                conn.close()
                continue
            h = hello["hello"]
            if h["world_size"] != self.world_size or h["node_rank"] in hellos or h["node_rank"] == 0:
                _send(conn, {"error": f"node rank {h['node_rank']} joined with world_size "
                                      f"{h['world_size']}, rank 0 has {self.world_size} (or that "
                                      "node rank joined already)"})
                conn.close()
                continue
            hellos[h["node_rank"]] = h
            bufs[h["node_rank"]] = buf
            self._clients.append(conn)
            self._links[h["node_rank"]] = conn
        addr, port, listener = self._gloo_listen()
        table = {0: [addr, port]}
        for node_rank, conn in list(self._links.items()):
            msg = _recv(conn, bufs[node_rank], self.timeout_s)
            if msg is None:
                raise self._peer_gone(node_rank)
            table[node_rank] = msg["gloo"]
        for conn in self._links.values():
            _send(conn, {"peers": table})
        self._mesh(table, listener)

    # -- a headless rank: connect to rank 0's store ---------------------------------------

    def _connect_store(self) -> None:
        deadline = time.monotonic() + self.timeout_s
        logged = -RETRY_LOG_S
        while True:
            try:
                conn = socket.create_connection((self.master_addr, self.master_port), timeout=5)
                break
            except OSError as exc:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise DistError(
                        "torch.distributed.DistNetworkError: The client socket has timed out "
                        f"after {int(self.timeout_s * 1000)}ms while trying to connect to "
                        f"({self.master_addr}, {self.master_port}).") from None
                if time.monotonic() - logged >= RETRY_LOG_S:
                    logged = time.monotonic()
                    code = exc.errno or errno.ETIMEDOUT
                    self.log.warning("[c10d] The client socket has failed to connect to [%s]:%d "
                                     "(errno: %d - %s).", self.master_addr, self.master_port,
                                     code, exc.strerror or "Connection timed out")
                time.sleep(min(1.0, max(0.05, left)))
        buf = bytearray()
        _send(conn, {"hello": {"node_rank": self.node_rank, "ranks": self.ranks,
                               "world_size": self.world_size}})
        addr, port, listener = self._gloo_listen()
        _send(conn, {"gloo": [addr, port]})
        msg = _recv(conn, buf, self.timeout_s)
        if msg is None:
            raise self._peer_gone(0)
        if "error" in msg:
            raise DistError(f"RuntimeError: (vLLM stand-in) {msg['error']}")
        self._clients.append(conn)  # the store connection stays open, as torch's does
        self._links[0] = conn
        self._mesh({int(k): v for k, v in msg["peers"].items()}, listener)

    # -- Gloo: every pair of nodes, from the GLOO_SOCKET_IFNAME address ----------------------

    def _gloo_listen(self) -> tuple[str, int, socket.socket]:
        if self.gloo_ifname:
            addr = interface_address(self.gloo_ifname)
        else:  # Gloo would resolve the hostname; the store's own address stands in for it
            addr = self.master_addr if self.node_rank == 0 else "0.0.0.0"  # noqa: S104
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.bind((addr, 0))
        listener.listen(64)
        return addr, listener.getsockname()[1], listener

    def _mesh(self, table: dict[int, list[Any]], listener: socket.socket) -> None:
        """Connect to every lower node from this node's Gloo address; accept the higher."""
        mine = table[self.node_rank][0]
        for peer in sorted(n for n in table if n < self.node_rank):
            host, port = table[peer]
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.settimeout(self.timeout_s)
            try:
                s.bind((mine, 0))
                s.connect((host, port))
            except OSError as exc:
                s.close()
                raise DistError(f"RuntimeError: Gloo connectFullMesh failed with "
                                f"{exc.strerror or exc}, remote=[{host}]:{port}") from None
            _send(s, {"node_rank": self.node_rank})
            self._links[peer] = s  # replaces the store link to rank 0: the pair carries it now
        listener.settimeout(self.timeout_s)
        for _ in [n for n in table if n > self.node_rank]:
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                raise DistError("RuntimeError: Gloo connectFullMesh failed with Connect timeout") from None
            hello = _recv(conn, bytearray(), 30.0)
            if hello is not None:
                self._links[int(hello["node_rank"])] = conn
        listener.close()
        for peer, s in self._links.items():
            threading.Thread(target=self._watch, args=(peer, s), daemon=True,
                             name=f"peer-{peer}").start()

    def _watch(self, peer: int, s: socket.socket) -> None:
        s.settimeout(None)
        with contextlib.suppress(OSError):
            while s.recv(4096):
                pass
        if self._closing or self.lost is not None:
            return
        self.lost = f"node rank {peer}"
        if self.on_lost is not None:
            self.on_lost(self.lost)

    def _peer_gone(self, peer: int) -> DistError:
        return DistError("RuntimeError: NCCL error: remote process exited or there was a network "
                         f"error (vLLM stand-in: node rank {peer} left while the process group formed)")

    def close(self) -> None:
        self._closing = True
        for s in [*self._links.values(), *self._clients, *([self._server] if self._server else [])]:
            with contextlib.suppress(OSError):
                s.close()
