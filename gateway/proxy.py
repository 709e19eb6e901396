"""The end of every chain: forward the request to a target of the route's upstream."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from gateway.errors import (
    ClientGone,
    PayloadTooLarge,
    RequestTimeout,
    UpstreamError,
    UpstreamTimeout,
)
from gateway.http.headers import end_to_end, message_head
from gateway.http.incoming import Incoming
from gateway.http.messages import Request, Response
from gateway.http.respond import informational
from gateway.upstream.connection import ConnectionLost, ResponseHead, UpstreamConnection
from gateway.upstream.pool import Target, Upstream

if TYPE_CHECKING:
    from gateway.http.incoming import RequestBody

IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})
_CHUNK_END = b"0\r\n\r\n"


class Proxy:
    """Forwards to `upstream`; one instance per route, built with the route's chain."""

    def __init__(
        self, upstream: Upstream, *, max_body: int, body_timeout: float, buffer_body: int = 0
    ) -> None:
        self.upstream = upstream
        self.max_body = max_body
        self.body_timeout = body_timeout
        self.buffer_body = buffer_body
        self.connect_timeout = upstream.config.timeouts.connect
        self.read_timeout = upstream.config.timeouts.read
        self.pass_host = upstream.config.pass_host

    async def __call__(self, request: Request) -> Response:
        body = request.body
        if self.buffer_body and body is not None and not isinstance(body, bytes):
            # Before any upstream connection is taken: a slow client holds none meanwhile.
            whole = await self._buffer(body, request.route.max_request_body)
            if whole is not None:
                request.body = whole
        last: UpstreamError | None = None
        for target in self.upstream.candidates():
            try:
                conn = await target.acquire(self.connect_timeout)
            except TimeoutError:
                last = UpstreamTimeout()
                continue
            except UpstreamError as exc:  # overloaded, or TLS that failed: try the next target
                last = exc
                continue
            except OSError:
                last = UpstreamError()
                continue
            return await self._exchange(request, target, conn)
        raise last or UpstreamError()

    async def _buffer(self, body: RequestBody, max_body: int) -> bytes | None:
        """The whole body when it ends within `buffer_request_body`, else None (it streams)."""
        limit = min(self.buffer_body, max_body)
        try:
            whole = await body.buffer(limit, self.body_timeout)
        except TimeoutError:
            raise RequestTimeout() from None
        except ConnectionError:
            raise ClientGone() from None
        if whole is None and limit == max_body:
            raise PayloadTooLarge()  # a chunked body past max_request_body
        return whole

    async def _exchange(
        self, request: Request, target: Target, conn: UpstreamConnection
    ) -> Response:
        started = time.perf_counter()
        head = self._head(request, target)
        try:
            answer = await self._send(request, conn, head)
        except ConnectionLost as exc:
            # A pooled connection the upstream closed while idle: retry once, on a new one,
            # when nothing came back and the request can be replayed without side effects.
            replayable = request.body is None or isinstance(request.body, bytes)
            if exc.answered or conn.used < 2 or not replayable or request.method not in IDEMPOTENT:
                raise UpstreamError() from exc
            try:
                conn = await target.acquire(self.connect_timeout, fresh=True)
            except TimeoutError:
                raise UpstreamTimeout() from None
            except OSError:
                raise UpstreamError() from None
            answer = await self._send(request, conn, head)
        request.upstream_seconds = time.perf_counter() - started
        return self._response(answer)

    def _head(self, request: Request, target: Target) -> bytes:
        headers = request.headers
        if not self.pass_host or "Host" not in headers:
            headers["Host"] = target.host_header
        body = request.body
        if isinstance(body, bytes):
            headers["Content-Length"] = str(len(body))
        elif body is not None and "Content-Length" not in headers:
            headers["Transfer-Encoding"] = "chunked"
        path = target.base_path + request.path if target.base_path else request.path
        if request.query_string:
            path = f"{path}?{request.query_string}"
        return message_head(f"{request.method} {path} HTTP/1.1\r\n", headers)

    async def _send(self, request: Request, conn: UpstreamConnection, head: bytes) -> ResponseHead:
        body = request.body
        pending = conn.start(
            head,
            head_only=request.method == "HEAD",
            read_timeout=self.read_timeout,
            client=request.incoming,
            interim=_forward_interim,
        )
        if body is None or isinstance(body, bytes):
            if body:
                conn.write(body)
            conn.request_done()  # arms the read timeout
            try:
                return await pending
            except BaseException:
                conn.abort()
                raise
        chunked = "Content-Length" not in request.headers
        sender = asyncio.ensure_future(self._stream_body(conn, body, chunked, request))
        try:
            done, _ = await asyncio.wait((pending, sender), return_when=asyncio.FIRST_COMPLETED)
            if sender in done:
                sender.result()  # raises what ended the upload early (413, 408, client gone)
            else:
                sender.add_done_callback(_retrieve)  # the upstream answered before the end
            # The read timeout runs from the end of the upload (armed by request_done), so a
            # slow client's long upload is bounded by the body timeout, not taken for a
            # silent upstream.
            return await pending
        except BaseException:
            sender.cancel()
            conn.abort()
            raise

    async def _stream_body(
        self, conn: UpstreamConnection, body: RequestBody, chunked: bool, request: Request
    ) -> None:
        limit = request.route.max_request_body
        sent = 0
        while True:
            try:
                # The first read answers `Expect: 100-continue`: only now, with the chain
                # passed, so a refused request never invites its body.
                async with asyncio.timeout(self.body_timeout):
                    chunk = await body.read()
            except TimeoutError:
                raise RequestTimeout() from None
            except ConnectionError:
                raise ClientGone() from None
            if not chunk:
                break
            sent += len(chunk)
            if sent > limit:
                raise PayloadTooLarge()
            try:
                conn.write(b"%x\r\n%b\r\n" % (len(chunk), chunk) if chunked else chunk)
                await conn.drain()
            except ConnectionError:
                return  # the upstream closed: its answer, or the loss, is reported by the head
        if chunked:
            conn.write(_CHUNK_END)
        conn.request_done()

    def _response(self, answer: ResponseHead) -> Response:
        return Response(answer.status, end_to_end(answer.headers), stream=answer.body)


def _forward_interim(client: Incoming | None, status: int, raw: list[tuple[bytes, bytes]]) -> None:
    # Only the request's own client (a background refresh has none), end-to-end headers only.
    if client is not None:
        informational(client, status, end_to_end(raw))


def _retrieve(future: asyncio.Future[None]) -> None:
    if not future.cancelled():
        future.exception()
