"""A client's request as the public listener received it: its head, and its body as it arrives.

The head is digested once, while it is parsed: hop-by-hop headers never reach `headers` (the
end-to-end headers, which become the upstream-bound ones), and the few that the gateway itself
acts on (Host, X-Request-ID, X-Forwarded-For, Via, Expect, Upgrade) are kept aside.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Protocol

from multidict import CIMultiDict

from gateway.errors import RequestTimeout

_HIGH_WATER = 256 * 1024
_LOW_WATER = 64 * 1024
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class ClientSide(Protocol):
    """What a request and its answer need of the client connection they came on
    (`gateway.http.connection.ClientConnection`)."""

    loop: asyncio.AbstractEventLoop
    peer: str
    scheme: str
    """`http` or `https`: what the client spoke to the gateway."""
    tls_subject: str | None
    """The verified client certificate's subject (mTLS), else None."""
    aborted: str | None
    """Why the gateway cut the connection off (`send_timeout`, `request_timeout`), else None."""

    @property
    def closing(self) -> bool:
        """Whether the connection will close after the answer in progress."""

    @property
    def gone(self) -> bool:
        """The client closed, or the connection is closing: writes go nowhere."""

    @property
    def writing_paused(self) -> bool: ...

    def write(self, data: bytes) -> None: ...

    async def drain(self) -> None:
        """Wait while the client reads slower than the gateway writes."""

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...

    def take_over(
        self,
        on_data: Callable[[bytes], None],
        on_lost: Callable[[], None],
        on_writable: Callable[[], None],
    ) -> bytes:
        """Hand the connection to a tunnel; returns what the client sent after the head."""

    def close(self) -> None: ...


class Incoming:
    """The request head as received, and the connection it came on."""

    __slots__ = (
        "body",
        "conn",
        "expect_continue",
        "forwarded_for",
        "headers",
        "host",
        "keep_alive",
        "method",
        "peer",
        "request_id",
        "started",
        "target",
        "upgrade",
        "version",
        "via",
    )

    def __init__(
        self,
        conn: ClientSide,
        method: str,
        target: str,
        version: str,
        headers: CIMultiDict[str],
        keep_alive: bool = True,
        host: str = "",
        request_id: str | None = None,
        forwarded_for: str | None = None,
        via: str | None = None,
        expect_continue: bool = False,
        upgrade: str | None = None,
        body: RequestBody | None = None,
        started: float = 0.0,
    ) -> None:
        self.conn = conn
        self.peer = conn.peer
        self.method = method
        self.target = target
        """The request-target exactly as sent (path and query, or absolute form)."""
        self.version = version
        """`"1.1"` or `"1.0"`."""
        self.headers = headers
        """End-to-end headers (hop-by-hop ones and those `Connection` names removed)."""
        self.keep_alive = keep_alive
        self.host = host
        """The Host header, lower-cased ("" when absent)."""
        self.request_id = request_id
        self.forwarded_for = forwarded_for
        self.via = via
        self.expect_continue = expect_continue
        self.upgrade = upgrade
        """The protocol asked for by `Connection: upgrade` + `Upgrade` (lower-cased), or None."""
        self.body = body
        """None when the request has no body."""
        self.started = started
        """Loop time of the request's first byte (`client.request_timeout` runs from it)."""

    @property
    def body_pending(self) -> bool:
        """Whether some of the body is still unread by the gateway (the connection cannot
        carry another request then)."""
        return self.body is not None and not self.body.complete


class RequestBody:
    """A request body as it arrives; read once, by the proxy, with flow control: the client is
    paused while more than a few hundred KiB wait unread."""

    __slots__ = (
        "_chunks",
        "_conn",
        "_error",
        "_high",
        "_size",
        "_waiter",
        "complete",
        "continued",
        "length",
    )

    def __init__(self, conn: ClientSide, length: int | None, expect_continue: bool) -> None:
        self.length = length
        """Content-Length, or None for a chunked body."""
        self.complete = False
        """Every byte has arrived (read or not)."""
        self.continued = not expect_continue
        self._conn = conn
        self._chunks: deque[bytes] = deque()
        self._size = 0
        self._high = _HIGH_WATER
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None

    def feed(self, chunk: bytes) -> None:
        self._chunks.append(chunk)
        self._size += len(chunk)
        if self._size > self._high:
            self._conn.pause_reading()
        self._wake()

    def finish(self) -> None:
        self.complete = True
        self._wake()

    def fail(self, exc: BaseException) -> None:
        if not self.complete:
            self._error = exc
            self._wake()

    def expire(self) -> None:
        """`client.request_timeout` passed before the last byte: reads raise `RequestTimeout`."""
        self.fail(RequestTimeout())

    def _raise(self) -> None:
        if isinstance(self._error, RequestTimeout):
            raise RequestTimeout()
        raise ConnectionResetError("client went away mid-body") from self._error

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def at_eof(self) -> bool:
        return self.complete and not self._chunks

    async def read(self) -> bytes:
        """The next chunk; b"" once the body is over. `ConnectionResetError` when the client
        went away mid-body. The first read sends `100 Continue` if the client waits for it."""
        if not self.continued:
            self.continued = True
            self._conn.write(_CONTINUE)
        while True:
            if self._chunks:
                chunk = self._chunks.popleft()
                self._size -= len(chunk)
                if self._size < _LOW_WATER:
                    self._conn.resume_reading()
                return chunk
            if self.complete:
                return b""
            if self._error is not None:
                self._raise()
            self._waiter = self._conn.loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None

    async def buffer(self, limit: int, gap: float) -> bytes | None:
        """The whole body, read, when it ends within `limit` bytes; None as soon as it passes
        `limit` (what arrived stays unread, to be streamed on). `TimeoutError` when no chunk
        came for `gap` seconds; `RequestTimeout`, `ConnectionResetError` as `read`."""
        if self.length is not None and self.length > limit:
            return None
        if not self.continued:
            self.continued = True
            self._conn.write(_CONTINUE)
        # Hold up to `limit` unread without pausing the client (feed pauses above `_high`).
        self._high = max(limit, _HIGH_WATER)
        if self._size <= limit:
            self._conn.resume_reading()
        try:
            while not self.complete and self._size <= limit:
                if self._error is not None:
                    self._raise()
                self._waiter = self._conn.loop.create_future()
                try:
                    async with asyncio.timeout(gap):
                        await self._waiter
                finally:
                    self._waiter = None
        finally:
            self._high = _HIGH_WATER
        if not self.complete or self._size > limit:
            if self._size > _HIGH_WATER:
                self._conn.pause_reading()
            return None
        whole = b"".join(self._chunks)
        self._chunks.clear()
        self._size = 0
        return whole
