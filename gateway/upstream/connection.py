"""One keep-alive HTTP/1.1 connection to an upstream, parsed with httptools (llhttp).

A lean client on purpose: the proxy's hot path is "write a head, stream bytes both ways",
and a general-purpose client (cookies, redirects, tracing) costs more than the whole gateway.
Flow control both ways keeps memory bounded: reading pauses while the client is slower than
the upstream, and request bodies wait for the upstream socket to drain.
"""

from __future__ import annotations

import asyncio
import zlib
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Any

import httptools

from gateway.errors import UpstreamError, UpstreamTimeout
from gateway.upstream.codings import Decoder, response_parser, undoable

_HIGH_WATER = 256 * 1024
_LOW_WATER = 64 * 1024


Interim = Callable[[Any, int, list[tuple[bytes, bytes]]], None]
"""`(client, status, raw headers)`: what becomes of an upstream's 1xx response."""


def _ignore(client: object, status: int, headers: list[tuple[bytes, bytes]]) -> None:
    return None


class ConnectionLost(UpstreamError):
    """The upstream closed or reset the connection before the response head arrived.

    `answered` is False when not one byte of a response came back: on a pooled connection
    that means the upstream had closed it while idle, and an idempotent request may be retried.
    """

    def __init__(self, *, answered: bool) -> None:
        super().__init__()
        self.answered = answered


class ResponseHead:
    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, headers: list[tuple[bytes, bytes]], body: ResponseBody) -> None:
        self.status = status
        self.headers = headers
        self.body = body


class ResponseBody:
    """The upstream's body as it arrives; implements `gateway.http.Body`."""

    __slots__ = ("_chunks", "_conn", "_done", "_error", "_size", "_timeout", "_waiter", "length")

    def __init__(self, conn: UpstreamConnection, length: int | None, timeout: float) -> None:
        self.length = length
        self._conn: UpstreamConnection | None = conn
        self._chunks: deque[bytes] = deque()
        self._size = 0
        self._done = False
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._timeout = timeout

    def feed(self, chunk: bytes) -> None:
        self._chunks.append(chunk)
        self._size += len(chunk)
        if self._size > _HIGH_WATER and self._conn is not None:
            self._conn.pause_reading()
        self._wake()

    def finish(self) -> None:
        self._done = True
        self._conn = None  # the connection may now serve another request
        self._wake()

    def fail(self, exc: BaseException) -> None:
        if not self._done:
            self._error = exc
            self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def buffered(self) -> bytes | None:
        if not self._done:
            return None
        whole = b"".join(self._chunks)
        self._chunks.clear()
        self._size = 0
        return whole

    async def __aiter__(self) -> AsyncIterator[bytes]:
        loop = asyncio.get_running_loop()
        while True:
            if self._chunks:
                chunk = self._chunks.popleft()
                self._size -= len(chunk)
                if self._size < _LOW_WATER and self._conn is not None:
                    self._conn.resume_reading()
                yield chunk
            elif self._done:
                return
            elif self._error is not None:
                raise UpstreamError() from self._error
            else:
                self._waiter = loop.create_future()
                try:
                    async with asyncio.timeout(self._timeout):
                        await self._waiter
                except TimeoutError:
                    self.close()
                    raise UpstreamTimeout() from None
                finally:
                    self._waiter = None

    def close(self) -> None:
        """Abandon the body; an unfinished one costs the connection (it cannot be reused)."""
        if not self._done and self._conn is not None:
            self._conn.close()
        self._done = True
        self._conn = None
        self._chunks.clear()


class UpstreamConnection(asyncio.Protocol):
    """An HTTP/1.1 client connection: one request at a time, reused while both sides agree."""

    def __init__(self, on_reusable: Callable[[UpstreamConnection], None]) -> None:
        self._on_reusable = on_reusable
        # Cached: before Python 3.12, get_running_loop() costs a getpid() system call.
        self._loop = asyncio.get_running_loop()
        self._parser = response_parser(self)
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.used = 0
        """Requests started on this connection; > 1 means it came from the pool."""
        self.idle_since = 0.0
        self._headers: list[tuple[bytes, bytes]] = []
        self._head: asyncio.Future[ResponseHead] | None = None
        self._body: ResponseBody | None = None
        self._decoder: Decoder | None = None
        self._read_timeout = 30.0
        self._head_only = False
        self._client: object = None
        self._interim: Interim = _ignore
        self._until_close = False
        self._chunked = False
        self._request_sent = False
        self._response_done = False
        self._keep_alive = False
        self._got_bytes = False
        self._drain: asyncio.Future[None] | None = None
        self._paused = False
        self._reading_paused = False
        self._timer: asyncio.TimerHandle | None = None
        self._upgraded = False
        self._after_upgrade = b""

    # -- asyncio.Protocol -------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self._got_bytes = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            # A 101: what follows its head belongs to the new protocol (see `detach`).
            self._after_upgrade = data[upgrade.args[0] :]
            self.pause_reading()
        except httptools.HttpParserError as exc:
            self._fail(UpstreamError(), exc)
            self.close()

    def eof_received(self) -> bool:
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._cancel_timer()
        if self._head is not None and not self._head.done():
            self._head.set_exception(ConnectionLost(answered=self._got_bytes))
        body, self._body = self._body, None
        if body is not None:
            if self._until_close and exc is None:
                # A body without length or chunking ends when the upstream closes.
                self._end(body)
            else:
                body.fail(exc or ConnectionResetError("upstream closed mid-body"))
        if self._drain is not None and not self._drain.done():
            self._drain.set_exception(ConnectionResetError("upstream closed"))

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)

    # -- httptools callbacks ----------------------------------------------------------------
    def on_message_begin(self) -> None:
        self._headers = []

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if status < 200 and status != 101:
            # Interim: 102, 103 go to the client at once (RFC 9110 15.2), 100 Continue is the
            # gateway's own business with its client; then wait for the final response.
            if self._client is not None and status != 100:
                self._interim(self._client, status, self._headers)
            return
        self._cancel_timer()
        self._upgraded = status == 101
        self._keep_alive = self._parser.should_keep_alive()
        self._decoder = None
        length = None
        chunked = False
        if not self._head_only:
            coded = None
            for name, value in self._headers:
                lower = name.lower()
                if lower == b"content-length":
                    length = int(value)
                elif lower == b"transfer-encoding":
                    coded = value if coded is None else coded + b"," + value
            if coded is not None and not self._codings(coded, length is not None):
                return
            chunked = coded is not None and self._chunked
            if coded is not None:
                length = None
        # llhttp has no "end of input" call: a body delimited by the connection's close is
        # recognised here and ended in connection_lost().
        self._until_close = (
            length is None and not chunked and not self._head_only and status not in (204, 304)
        )
        self._body = ResponseBody(self, length, self._read_timeout)
        head = ResponseHead(status, self._headers, self._body)
        if self._head is not None and not self._head.done():
            self._head.set_result(head)
        if self._head_only:
            # llhttp cannot be told a response answers HEAD; end it here, parse afresh next time.
            self._parser = response_parser(self)
            self.on_message_complete()

    def _codings(self, coded: bytes, with_length: bool) -> bool:
        """Transfer-Encoding (RFC 9112 6.1, 6.3): chunked last or the body runs to the close;
        other codings undone here; Content-Length overridden, and the connection not reused.
        False when the message cannot be read (then it has failed)."""
        codings = [c.strip().lower() for c in coded.split(b",") if c.strip()]
        self._chunked = codings[-1:] == [b"chunked"]
        others = codings[:-1] if self._chunked else codings
        if not undoable(others):
            # An unknown coding, or chunked applied before another: the bytes mean nothing
            # the gateway could forward.
            self._fail(UpstreamError(), ValueError(f"transfer coding {coded!r}"))
            self.close()
            return False
        if others:
            self._decoder = Decoder(others)
        if with_length:
            self._keep_alive = False  # smuggling-shaped framing: never trust what follows
            self._headers = [(n, v) for n, v in self._headers if n.lower() != b"content-length"]
        return True

    def on_body(self, chunk: bytes) -> None:
        if self._body is not None:
            if self._decoder is not None:
                try:
                    chunk = self._decoder.feed(chunk)
                except zlib.error as exc:
                    body, self._body = self._body, None  # not ended by the close: failed
                    body.fail(exc)
                    self.close()
                    return
                if not chunk:
                    return
            self._body.feed(chunk)

    def _end(self, body: ResponseBody) -> None:
        if self._decoder is not None:
            try:
                rest = self._decoder.flush()
            except zlib.error as exc:
                body.fail(exc)
                return
            if rest:
                body.feed(rest)
        body.finish()

    def on_message_complete(self) -> None:
        if self._body is None:
            return  # the end of an interim response, or of a HEAD response already ended
        body, self._body = self._body, None
        self._response_done = True
        if body is not None:
            self._end(body)
        # The whole body is buffered now; a pause for its sake must not outlive it, or the
        # next exchange on this connection would never be read.
        self.resume_reading()
        self._maybe_reusable()

    # -- client API --------------------------------------------------------------------------
    def start(
        self,
        head: bytes,
        *,
        head_only: bool,
        read_timeout: float,
        client: object = None,
        interim: Interim = _ignore,
    ) -> asyncio.Future[ResponseHead]:
        """Send a request head; the future resolves with the response head, or fails with
        `UpstreamTimeout` when none came `read_timeout` after the request was fully sent.
        Informational responses before it (but 100) are handed to `interim` with `client`."""
        self.used += 1
        self._head = self._loop.create_future()
        self._head_only = head_only
        self._client = client
        self._interim = interim
        self._read_timeout = read_timeout
        self._request_sent = False
        self._response_done = False
        self._got_bytes = False
        self.write(head)
        return self._head

    def write(self, data: bytes) -> None:
        if self.transport is None or self.closed:
            raise ConnectionResetError("upstream closed")
        self.transport.write(data)

    async def drain(self) -> None:
        if self.closed:
            raise ConnectionResetError("upstream closed")
        if self._paused:
            self._drain = self._loop.create_future()
            try:
                await self._drain
            finally:
                self._drain = None

    def request_done(self) -> None:
        """The whole request (head and body) has been written: the read timeout starts."""
        self._request_sent = True
        head = self._head
        if head is not None and not head.done():
            # One timer handle instead of an asyncio.timeout() block per request: this is
            # the hot path.
            self._timer = self._loop.call_later(self._read_timeout, self._read_timed_out)
        self._maybe_reusable()

    def _read_timed_out(self) -> None:
        self._timer = None
        head = self._head
        if head is not None and not head.done():
            head.set_exception(UpstreamTimeout())
        self.close()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _maybe_reusable(self) -> None:
        if self._upgraded:
            return  # the connection now belongs to a tunnel
        if self._request_sent and self._response_done and not self.closed:
            if self._keep_alive:
                self._head = None
                self._on_reusable(self)
            else:
                self.close()

    def _fail(self, error: UpstreamError, cause: BaseException) -> None:
        if self._head is not None and not self._head.done():
            error.__cause__ = cause
            self._head.set_exception(error)
        if self._body is not None:
            self._body.fail(cause)

    def pause_reading(self) -> None:
        if self.transport is not None and not self.closed and not self._reading_paused:
            self._reading_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.transport is not None and not self.closed and self._reading_paused:
            self._reading_paused = False
            self.transport.resume_reading()

    def detach(self) -> tuple[asyncio.Transport | None, bytes]:
        """After a `101`: the transport, no longer this protocol's, and the bytes that
        followed the response head. None when the upstream has already closed."""
        self._cancel_timer()
        self._head = None
        transport = None if self.closed else self.transport
        self.closed = True
        return transport, self._after_upgrade

    def abort(self) -> None:
        """Give up on the current exchange (timeout, client gone) and close."""
        self._cancel_timer()
        head, self._head = self._head, None
        if head is not None and not head.done():
            head.cancel()
        self.close()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self.transport is not None:
                self.transport.close()

    def __repr__(self) -> str:
        peer: Any = self.transport.get_extra_info("peername") if self.transport else None
        return f"<UpstreamConnection {peer} used={self.used} closed={self.closed}>"
