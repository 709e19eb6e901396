"""One client connection of the public listener: heads parsed, requests answered in order.

What a connection guarantees, whatever the handler does:
- malformed or oversized heads get a JSON 400/414/431 (501 for a transfer coding other than
  chunked) that never echoes the client's bytes, after the answers to the requests before
  them, and the connection closes; ambiguous framing (CL+TE, two lengths, obs-fold, NUL) is
  refused by llhttp itself;
- its timeouts (head, whole request, keep-alive, send) are checked by its listener's sweep
  (`check_timeouts`), never by a timer of its own;
- pipelined requests are answered in order; reading pauses while one is in progress, and
  while a request body waits unread (flow control both ways).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import ssl
from collections import deque
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Protocol

import httptools

from gateway.config.models import ClientLimits
from gateway.http.heads import HeadReader, Refused
from gateway.http.incoming import Incoming, RequestBody
from gateway.http.tls import peer_subject

log = logging.getLogger("gateway.server")

Handler = Callable[[Incoming], Awaitable[None]]
"""`async (incoming) -> None`: answers the request through `incoming.conn`; sets
`incoming.keep_alive` to whether the connection may carry another request."""

_TUNNEL_BUFFER = 64 * 1024


class Owner(Protocol):
    """What a connection needs of the listener that accepted it (`gateway.http.listener`)."""

    handler: Handler
    limits: ClientLimits
    head_limit: int
    closing: bool
    tls: ssl.SSLContext | None

    def opened(self, conn: ClientConnection) -> None: ...

    def forget(self, conn: ClientConnection) -> None: ...


class ClientConnection(asyncio.Protocol):
    """One client connection: parses request heads, runs the handler, keeps the order."""

    scheme = "http"
    """`https` on the TLS listener (set once per connection)."""
    tls_subject: str | None = None
    """The verified client certificate's subject (mTLS), the key source `tls.subject`."""

    def __init__(self, listener: Owner) -> None:
        self.listener = listener
        limits = listener.limits
        # Cached: before Python 3.12, get_running_loop() costs a getpid() system call.
        self.loop = asyncio.get_running_loop()
        self._reader = HeadReader(self, limits, self._accept)
        self.transport: asyncio.Transport | None = None
        self.peer = ""
        self.closed = False
        self._closing = False  # close after the answer in progress
        self._reading_paused = False
        self._writing_paused = False
        self._paused_since = 0.0
        self.aborted: str | None = None
        """Why the gateway cut the connection off (`send_timeout`, `request_timeout`): logged."""
        self._drain: asyncio.Future[None] | None = None
        # Requests being answered / waiting their turn.
        self._current: Incoming | None = None
        self._queue: deque[Incoming] = deque()
        self._task: asyncio.Task[None] | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._idle_since = self.loop.time()
        self._refusal: Refused | None = None
        # An upgrade request: bytes after its head, until the handler decides.
        self._tunnel_bytes: bytearray | None = None
        self._tunnel: Callable[[bytes], None] | None = None
        self._on_lost: Callable[[], None] | None = None
        self._on_writable: Callable[[], None] | None = None

    # -- asyncio.Protocol -------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.peer = peer[0] if isinstance(peer, tuple) else ""
        if self.listener.tls is not None:  # once per connection, after the handshake
            self.scheme = "https"
            self.tls_subject = peer_subject(transport.get_extra_info("peercert"))
        self.listener.opened(self)

    def data_received(self, data: bytes) -> None:
        if self._tunnel is not None:
            self._tunnel(data)
            return
        if self._tunnel_bytes is not None:
            self._hold_for_tunnel(data)
            return
        if self.closed or self._refusal is not None:
            return
        reader = self._reader
        reader.head_bytes += len(data)
        if reader.head_bytes > self.listener.head_limit and reader.in_head:
            self._refuse(Refused(431, "request_header_fields_too_large"))
            return
        try:
            reader.feed(data)
        except httptools.HttpParserUpgrade as upgrade:
            self._hold_for_tunnel(data[upgrade.args[0] :])
        except httptools.HttpParserCallbackError as exc:
            refused = exc.__context__
            if isinstance(refused, Refused):
                self._refuse(refused)
            else:
                log.error("request parsing failed", exc_info=refused)
                self._refuse(Refused(500, "internal_error"))
        except httptools.HttpParserError as exc:
            log.info("refused a malformed request from %s: %s", self.peer, _reason(exc))
            self._refuse(Refused(400, "bad_request"))

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.listener.forget(self)
        gone = ConnectionResetError("client went away")
        for incoming in (self._current, *self._queue, self._reader.last):
            if incoming is not None and incoming.body is not None:
                incoming.body.fail(gone)
        self._queue.clear()
        self._wake()
        if self._drain is not None and not self._drain.done():
            self._drain.set_exception(gone)
        if self._on_lost is not None:
            self._on_lost()

    def pause_writing(self) -> None:
        self._writing_paused = True
        self._paused_since = self.loop.time()

    def resume_writing(self) -> None:
        self._writing_paused = False
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)
        if self._on_writable is not None:
            self._on_writable()

    # -- running requests -------------------------------------------------------------------
    def _accept(self, incoming: Incoming) -> None:
        """A head has been read: queue it, and wake the connection's task."""
        self._queue.append(incoming)
        if self._task is None:
            self._task = self.loop.create_task(self._serve())
        elif self._waiter is not None:
            self._wake()
        else:
            self.pause_reading()  # pipelined: one request at a time

    def _wake(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _serve(self) -> None:
        """The connection's task: answers its requests in order, until it closes."""
        handler = self.listener.handler
        queue = self._queue
        while True:
            if not queue:
                self._idle_since = self.loop.time()
                self.resume_reading()
                self._waiter = self.loop.create_future()
                await self._waiter
                if self.closed or not queue:
                    return
            incoming = self._current = queue.popleft()
            try:
                await handler(incoming)
            except Exception:
                log.exception("answering a request failed")
                self.abort()
                return
            finally:
                self._current = None
            if self.closed or self._tunnel is not None:
                return
            if self._writing_paused:
                # A client that does not read its answers gets no more of them: pipelined
                # requests wait, so what is buffered for it stays about one answer.
                try:
                    await self.drain()
                except ConnectionError:
                    return
            if not incoming.keep_alive or self._closing or incoming.upgrade is not None:
                self.close()
                return
            if self._refusal is not None and not queue:
                self._answer_refusal(self._refusal)
                return

    def _refuse(self, refused: Refused) -> None:
        self._refusal = refused
        # The refused head will never finish: its head timeout must not cut off the answers
        # still due before its refusal.
        self._reader.in_head = False
        if self._current is not None or self._queue:
            # Answers go out in request order: the task refuses once it has answered the
            # requests read before this one (queued ones too, perhaps not yet begun); nothing
            # more is read meanwhile.
            self.pause_reading()
            return
        self._answer_refusal(refused)

    def _answer_refusal(self, refused: Refused) -> None:
        request_id = os.urandom(16).hex()
        body = json.dumps({"error": refused.code, "request_id": request_id}).encode()
        self.write(
            b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
            b"X-Request-ID: %s\r\nConnection: close\r\n\r\n%s"
            % (
                refused.status,
                HTTPStatus(refused.status).phrase.encode(),
                len(body),
                request_id.encode(),
                body,
            )
        )
        if refused.status != 400 or refused.code != "bad_request":
            log.info("refused a request from %s: %s", self.peer, refused.code)
        self.close()

    def check_timeouts(self, now: float) -> None:
        """Close a connection whose head is overdue, or that sat idle too long; expire a
        request body still arriving past `request_timeout` (the listener's sweep calls this
        a few times per shortest timeout)."""
        limits = self.listener.limits
        reader = self._reader
        if self._writing_paused and now - self._paused_since > limits.send_timeout:
            # A client that does not read would hold its buffer, and through a streamed
            # answer the upstream connection, forever. abort(): close() would wait for the
            # buffer to drain, which is what never happens.
            log.info(
                "closed a connection from %s that read nothing for %gs (send_timeout)",
                self.peer,
                limits.send_timeout,
            )
            self.aborted = "send_timeout"
            self.abort()
        elif (
            (current := self._current) is not None
            and current.body is not None
            and not current.body.complete
            and now - current.started > limits.request_timeout
        ):
            self._request_overdue(current.body, limits.request_timeout)
        elif reader.in_head:
            if now - reader.head_started > min(limits.header_timeout, limits.request_timeout):
                log.info(
                    "closed a connection whose request head took over %gs", limits.header_timeout
                )
                self.close()
        elif (
            self._current is None
            and not self._queue
            and self._tunnel is None
            and now - self._idle_since > limits.keepalive_timeout
        ):
            self.close()

    def _request_overdue(self, body: RequestBody, timeout: float) -> None:
        """The body is still arriving past `client.request_timeout`: whoever reads it (the
        proxy, a policy) gets `RequestTimeout`, a 408, and aborts any upstream request."""
        if self.aborted == "request_timeout":
            return  # already said; the connection closes after the 408
        log.info(
            "a request from %s was still sending its body after %gs (request_timeout)",
            self.peer,
            timeout,
        )
        self.aborted = "request_timeout"
        body.expire()

    # -- for the handler ---------------------------------------------------------------------
    @property
    def closing(self) -> bool:
        """Whether this connection will close after the answer in progress."""
        return self._closing or self.listener.closing

    def write(self, data: bytes) -> None:
        transport = self.transport
        if transport is not None and not self.closed and not transport.is_closing():
            transport.write(data)

    @property
    def gone(self) -> bool:
        """The client closed, or the connection is closing: writes go nowhere."""
        return self.closed or self.transport is None or self.transport.is_closing()

    async def drain(self) -> None:
        """Wait while the client reads slower than the gateway writes."""
        if self.closed:
            raise ConnectionResetError("client went away")
        if self._writing_paused:
            self._drain = self.loop.create_future()
            try:
                await self._drain
            finally:
                self._drain = None

    @property
    def writing_paused(self) -> bool:
        return self._writing_paused

    def pause_reading(self) -> None:
        if not self._reading_paused and self.transport is not None and not self.closed:
            self._reading_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self._reading_paused and self.transport is not None and not self.closed:
            if self._queue or self._refusal is not None:
                return  # reading resumes when the waiting requests have been answered
            self._reading_paused = False
            self.transport.resume_reading()

    def take_over(
        self,
        on_data: Callable[[bytes], None],
        on_lost: Callable[[], None],
        on_writable: Callable[[], None],
    ) -> bytes:
        """Hand the connection to a tunnel (a WebSocket): from now on its bytes go to
        `on_data`, its loss to `on_lost`, and `on_writable` is called when writes may go on
        after a pause. Returns what the client sent after the request head."""
        early = bytes(self._tunnel_bytes or b"")
        self._tunnel_bytes = None
        self._tunnel = on_data
        self._on_lost = on_lost
        self._on_writable = on_writable
        self._reading_paused = False
        if self.transport is not None and not self.closed:
            self.transport.resume_reading()
        return early

    def _hold_for_tunnel(self, data: bytes) -> None:
        held = self._tunnel_bytes
        if held is None:
            held = self._tunnel_bytes = bytearray()
        held += data
        if len(held) > _TUNNEL_BUFFER:
            self.pause_reading()

    def close_when_idle(self) -> None:
        """Close now if idle, else after the answer in progress (shutdown)."""
        self._closing = True
        if self._current is None and self._tunnel is None:
            self.close()

    def cut_off(self) -> asyncio.Task[None] | None:
        """Abort the connection; returns its task when it was answering a request (now
        cancelled), else None."""
        self.abort()
        task = self._task
        if self._current is None or task is None or task.done():
            return None
        task.cancel()
        return task

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()


def _reason(exc: Exception) -> str:
    # llhttp's reason names the kind of error ("Invalid header value char"), never the bytes.
    return str(exc).split(":", 1)[0][:80]
