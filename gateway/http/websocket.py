"""WebSocket upgrades on routes with `websocket: true`: a byte tunnel after the handshake.

The chain runs on the upgrade request like on any other. The handshake is forwarded to the
upstream as the client sent it (Sec-WebSocket-Key, -Version, -Protocol, -Extensions), so
subprotocols and extensions are the two ends' business. On the upstream's `101`, the gateway
answers the client with the upstream's head and splices the two connections: bytes are
copied both ways, with flow control, until either side closes. Any other answer is returned
to the client like a normal response.
"""

from __future__ import annotations

import asyncio
import logging
import time

from multidict import CIMultiDict

from gateway.errors import UpstreamError, UpstreamTimeout
from gateway.http.headers import end_to_end, message_head
from gateway.http.incoming import ClientSide, Incoming
from gateway.http.messages import Handler, Request, Response
from gateway.http.respond import http_date
from gateway.upstream.connection import ResponseHead, UpstreamConnection
from gateway.upstream.pool import Upstream

log = logging.getLogger("gateway.websocket")


class WebSocketProxy:
    """Terminal handler of a WebSocket route: upgrades are tunnelled, the rest go to HTTP."""

    def __init__(self, http: Handler, upstream: Upstream) -> None:
        self.http = http
        self.upstream = upstream

    async def __call__(self, request: Request) -> Response:
        incoming = request.incoming
        if incoming is None or incoming.upgrade != "websocket":
            return await self.http(request)
        timeouts = self.upstream.config.timeouts
        last: UpstreamError = UpstreamError()
        for target in self.upstream.candidates():
            try:
                conn = await target.connect(timeouts.connect)
            except TimeoutError:
                last = UpstreamTimeout()
                continue
            except UpstreamError as exc:  # TLS that failed
                last = exc
                continue
            except OSError:
                last = UpstreamError()
                continue
            if not self.upstream.config.pass_host or "Host" not in request.headers:
                request.headers["Host"] = target.host_header
            # The hop-by-hop pair the parser took off goes back on: it is what asks.
            request.headers["Connection"] = "Upgrade"
            request.headers["Upgrade"] = "websocket"
            path = target.base_path + request.target
            head = message_head(f"{request.method} {path} HTTP/1.1\r\n", request.headers)
            started = time.perf_counter()
            pending = conn.start(head, head_only=False, read_timeout=timeouts.read)
            conn.request_done()
            try:
                answer = await pending
            except BaseException:
                conn.abort()
                raise
            request.upstream_seconds = time.perf_counter() - started
            if answer.status != 101:
                return Response(answer.status, end_to_end(answer.headers), stream=answer.body)
            return _switch(conn, answer)
        raise last


def _decoded(answer: ResponseHead) -> CIMultiDict[str]:
    return CIMultiDict(
        (name.decode("latin-1"), value.decode("utf-8", "surrogateescape"))
        for name, value in answer.headers
    )


def _switch(conn: UpstreamConnection, answer: ResponseHead) -> Response:
    # The upstream's own head goes to the client: Upgrade, Connection, Sec-WebSocket-Accept
    # and -Protocol are what the client's handshake checks.
    headers = _decoded(answer)

    async def takeover(incoming: Incoming) -> None:
        client = incoming.conn
        incoming.keep_alive = False
        transport, early_from_upstream = conn.detach()
        if transport is None or client.gone:
            if transport is not None:
                transport.close()
            return
        if "Date" not in headers:
            headers["Date"] = http_date()
        client.write(message_head("HTTP/1.1 101 Switching Protocols\r\n", headers))
        _Tunnel(client, transport, early_from_upstream)

    return Response(101, headers, upgrade=takeover)


class _Tunnel(asyncio.Protocol):
    """The upstream side of a spliced connection; the client side is the listener's connection."""

    def __init__(self, client: ClientSide, upstream: asyncio.Transport, early: bytes) -> None:
        self.client = client
        self.upstream = upstream
        upstream.set_protocol(self)
        if early:
            client.write(early)
        early_from_client = client.take_over(self._from_client, self._client_lost, self._writable)
        if early_from_client:
            upstream.write(early_from_client)
        upstream.resume_reading()

    # client -> upstream
    def _from_client(self, data: bytes) -> None:
        if not self.upstream.is_closing():
            self.upstream.write(data)

    def pause_writing(self) -> None:
        self.client.pause_reading()

    def resume_writing(self) -> None:
        self.client.resume_reading()

    def _client_lost(self) -> None:
        self.upstream.close()

    # upstream -> client
    def data_received(self, data: bytes) -> None:
        self.client.write(data)
        if self.client.writing_paused:
            self.upstream.pause_reading()

    def _writable(self) -> None:
        if not self.upstream.is_closing():
            self.upstream.resume_reading()

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.client.close()
