"""A lean Redis client for the request path: many concurrent commands share few connections.

Commands issued in the same event-loop turn (by concurrent requests) leave in one write and
their replies are parsed by hiredis in one read: an automatic pipeline. A general client
(redis-py) pays a pool checkout, a task switch and Python-level parsing per command, which on
this path costs more than the whole proxying of a request; here a command costs a future.

Replies come back in order on a connection, so one timer per connection bounds every call:
when the oldest outstanding command is older than the timeout, the connection is declared dead
and everything waiting on it fails at once (a stuck Redis stalls all of them anyway).
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import hiredis

from gateway.errors import StoreUnavailable

Arg = bytes | str | int | float
Address = tuple[str, int]
"""(host, port), or (path, 0) for a unix socket."""

# Errors that mean "this server cannot serve us now" (a demoted master after a failover,
# a server loading its data): the connection is dropped so the next one asks again.
_NOT_SERVING = frozenset({"READONLY", "MASTERDOWN", "LOADING", "CLUSTERDOWN"})


class ReplyError(Exception):
    """Redis answered this command with an error (the connection itself is fine)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.code = message.split(" ", 1)[0]


class _Connection(asyncio.Protocol):
    def __init__(self, timeout: float, on_not_serving: Callable[[], None] | None = None) -> None:
        self._timeout = timeout
        self._on_not_serving = on_not_serving
        self._reader = hiredis.Reader()
        self._waiting: deque[tuple[asyncio.Future[Any], float]] = deque()
        self._out: list[bytes] = []
        self._loop = asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | None = None
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.retired = False
        """Takes no new commands; closes once the pending ones are answered."""
        self.lost: asyncio.Future[None] = self._loop.create_future()

    @property
    def pending(self) -> int:
        return len(self._waiting)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self._reader.feed(data)
        waiting = self._waiting
        while True:
            try:
                reply = self._reader.gets()
            except hiredis.ProtocolError as exc:
                self._fail(StoreUnavailable(f"redis protocol error: {exc}"))
                return
            if reply is False:
                break
            if not waiting:
                self._fail(StoreUnavailable("redis sent a reply nobody asked for"))
                return
            future, _ = waiting.popleft()
            if isinstance(reply, hiredis.ReplyError):
                error = ReplyError(str(reply))
                if error.code in _NOT_SERVING:
                    if not future.done():
                        future.set_exception(StoreUnavailable(f"redis is not serving: {error}"))
                    self._fail(StoreUnavailable(f"redis is not serving: {error.code}"))
                    if self._on_not_serving is not None:
                        self._on_not_serving()  # the server's state, not this connection's
                    return
                if not future.done():
                    future.set_exception(error)
            elif not future.done():
                future.set_result(reply)
        if self.retired and not waiting and self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(StoreUnavailable("redis connection lost"))
        if not self.lost.done():
            self.lost.set_result(None)

    def retire(self) -> None:
        """Take no new commands; close as soon as the pending ones are answered."""
        self.retired = True
        if not self._waiting and self.transport is not None:
            self.transport.close()

    def call(self, packed: bytes) -> asyncio.Future[Any]:
        future = self._loop.create_future()
        if self.closed or self.retired:
            future.set_exception(StoreUnavailable("redis connection closed"))
            return future
        self._waiting.append((future, time.monotonic()))
        self._out.append(packed)
        if len(self._out) == 1:
            # Everything asked for in this loop turn leaves in one write.
            self._loop.call_soon(self._flush)
        if self._timer is None:
            self._timer = self._loop.call_later(self._timeout, self._check)
        return future

    def _flush(self) -> None:
        out, self._out = self._out, []
        if out and self.transport is not None and not self.closed:
            self.transport.write(b"".join(out) if len(out) > 1 else out[0])

    def _check(self) -> None:
        self._timer = None
        if not self._waiting:
            return
        age = time.monotonic() - self._waiting[0][1]
        if age >= self._timeout:
            self._fail(StoreUnavailable(f"redis did not answer within {self._timeout:g}s"))
            return
        self._timer = self._loop.call_later(self._timeout - age, self._check)

    def _fail(self, error: StoreUnavailable) -> None:
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        waiting, self._waiting = self._waiting, deque()
        for future, _ in waiting:
            if not future.done():
                future.set_exception(error)
        if self.transport is not None:
            self.transport.close()


class RespClient:
    """Commands to one Redis server over a few multiplexed connections."""

    def __init__(
        self,
        address: Address | Callable[[], Awaitable[Address]],
        *,
        timeout: float,
        connections: int = 2,
        username: str | None = None,
        password: str | None = None,
        db: int = 0,
        tls: ssl.SSLContext | None = None,
        connect_timeout: float = 1.0,
        require_master: bool = False,
    ) -> None:
        self._address = address
        self.timeout = timeout
        self._size = max(1, connections)
        self._setup: list[bytes] = []
        if password is not None:
            auth = ("AUTH", username, password) if username else ("AUTH", password)
            self._setup.append(hiredis.pack_command(auth))  # type: ignore[arg-type]
        if db:
            self._setup.append(hiredis.pack_command(("SELECT", db)))  # type: ignore[arg-type]
        if require_master:
            # Whoever named the address (a Sentinel) may lag behind a failover: a server
            # that is no longer the master is refused before any command goes to it.
            self._setup.append(hiredis.pack_command(("ROLE",)))
        self._require_master = require_master
        self._tls = tls
        self._connect_timeout = connect_timeout
        self._connections: list[_Connection] = []
        self._connecting: asyncio.Future[_Connection] | None = None
        self._next = 0

    async def execute(self, *args: Arg) -> Any:
        """Send one command, await its reply; `ReplyError` or `StoreUnavailable` on failure."""
        connection = self._pick()
        if connection is None:
            connection = await self._connect()
        # The stub wants a 1-tuple (`tuple[X]`), it means any length.
        return await connection.call(hiredis.pack_command(args))  # type: ignore[arg-type]

    async def ping(self) -> None:
        """Raise `StoreUnavailable` (or `ReplyError`) unless the server answers now."""
        await self.execute("PING")

    async def pipeline(self, commands: Sequence[Sequence[Arg]]) -> list[Any]:
        """Several commands back to back on one connection; replies (or errors) in order."""
        connection = self._pick() or await self._connect()
        packed = [hiredis.pack_command(tuple(c)) for c in commands]  # type: ignore[arg-type]
        futures = [connection.call(command) for command in packed]
        return list(await asyncio.gather(*futures, return_exceptions=True))

    def retire_all(self) -> None:
        """Open new connections for the next commands (to the address asked for again); the
        current ones still deliver the replies they owe, then close."""
        connections, self._connections = self._connections, []
        for connection in connections:
            connection.retire()

    def _pick(self) -> _Connection | None:
        connections = self._connections
        if len(connections) < self._size:
            return None
        self._next = (self._next + 1) % len(connections)
        candidate = connections[self._next]
        if candidate.closed or candidate.retired:
            connections.remove(candidate)
            return None
        return candidate

    async def _connect(self) -> _Connection:
        # Concurrent callers share one connection attempt rather than stampeding the server.
        if self._connecting is None:
            self._connecting = asyncio.ensure_future(self._open())
            self._connecting.add_done_callback(self._connected)
        # A caller waits no longer than a command may take (a host dropping packets, a slow
        # Sentinel); the attempt goes on, up to the connect timeout, for the callers after it.
        try:
            async with asyncio.timeout(self.timeout):
                return await asyncio.shield(self._connecting)
        except TimeoutError:
            raise StoreUnavailable(f"no redis connection within {self.timeout:g}s") from None

    def _connected(self, attempt: asyncio.Future[_Connection]) -> None:
        self._connecting = None
        if not attempt.cancelled() and attempt.exception() is None:
            self._connections.append(attempt.result())

    async def _open(self) -> _Connection:
        loop = asyncio.get_running_loop()
        host, port = "?", 0
        connection: _Connection | None = None

        def protocol() -> _Connection:
            return _Connection(self.timeout, self.retire_all)

        try:
            async with asyncio.timeout(self._connect_timeout):
                address = self._address
                host, port = address if isinstance(address, tuple) else await address()
                if host.startswith("/"):
                    _, connection = await loop.create_unix_connection(protocol, host)
                else:
                    _, connection = await loop.create_connection(
                        protocol,
                        host,
                        port,
                        ssl=self._tls,
                        server_hostname=host if self._tls else None,
                    )
                replies = [await connection.call(packed) for packed in self._setup]
            if self._require_master and replies[-1][0] != b"master":
                role = replies[-1][0].decode(errors="replace")
                raise StoreUnavailable(f"redis at {host}:{port} is a {role}, not the master")
        except BaseException as exc:
            if connection is not None and connection.transport is not None:
                connection.transport.close()
            if isinstance(exc, (OSError, TimeoutError)):
                raise StoreUnavailable(
                    f"cannot connect to redis at {host}:{port}: {type(exc).__name__}"
                ) from exc
            if isinstance(exc, ReplyError):
                raise StoreUnavailable(f"redis refused the connection setup: {exc}") from exc
            raise
        return connection

    async def close(self) -> None:
        connections, self._connections = self._connections, []
        for connection in connections:
            if connection.transport is not None:
                connection.transport.close()
        for connection in connections:
            await asyncio.shield(connection.lost)
