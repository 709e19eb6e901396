"""Listening sockets and servers: the public listener (per worker) and admin/control listeners."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage, LineTooLong
from aiohttp.web_protocol import RequestHandler

from gateway.app import Gateway
from gateway.config import GatewayConfig, split_listen

log = logging.getLogger("gateway.server")


def listening_socket(listen: str, *, reuse_port: bool) -> socket.socket:
    """A bound, listening TCP socket; with `reuse_port`, every worker binds its own (the
    kernel spreads connections across them evenly, unlike one shared accept queue)."""
    host, port = split_listen(listen)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.listen(1024)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


class _ClientConnection(RequestHandler):
    """aiohttp's connection handler, with two guards for the public listener.

    - Malformed requests are answered in the gateway's JSON format. aiohttp's own error page
      echoes the offending bytes (a cookie, a token) back as text; this one names the problem
      only, and the log gets the kind of error, not the bytes.
    - A request head must arrive within `client.header_timeout` of its first byte, so clients
      that trickle headers (slowloris) cannot hold connections open.
    """

    __slots__ = ("_busy", "_head_timeout", "_head_timer")

    def __init__(self, manager: web.Server, *, head_timeout: float, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._head_timeout = head_timeout
        self._head_timer: asyncio.TimerHandle | None = None
        self._busy = False

    def data_received(self, data: bytes) -> None:
        # Bytes between requests start a request head: time it. (Body bytes arrive while a
        # request is busy, so a long upload never arms the timer.)
        if not self._busy and self._head_timer is None:
            self._head_timer = self._loop.call_later(self._head_timeout, self._head_timed_out)
        super().data_received(data)

    def head_complete(self) -> None:
        self._busy = True
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def response_sent(self) -> None:
        """The gateway wrote a whole answer: the next bytes begin the next request's head."""
        self._busy = False

    def _head_timed_out(self) -> None:
        self._head_timer = None
        log.info("closed a connection whose request head took over %gs", self._head_timeout)
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        super().connection_lost(exc)

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        status, code = _classify(status, exc)
        if status >= 500:
            log.error("request from %s failed", request.remote, exc_info=exc)
        else:
            log.info("refused a malformed request from %s: %s", request.remote, code)
        body = json.dumps({"error": code, "request_id": os.urandom(16).hex()})
        response = web.Response(status=status, text=body, content_type="application/json")
        response.force_close()
        return response


def _classify(status: int, exc: BaseException | None) -> tuple[int, str]:
    if isinstance(exc, LineTooLong):
        # The request-target arrives as a bytearray, header lines as bytes.
        if exc.args and isinstance(exc.args[0], bytearray):
            return 414, "uri_too_long"
        return 431, "request_header_fields_too_large"
    if isinstance(exc, BadHttpMessage) and "too many headers" in str(exc).lower():
        return 431, "request_header_fields_too_large"
    if status >= 500:
        return 500, "internal_error"
    return 400, "bad_request"


class _Server(web.Server):
    def __init__(self, handler: Any, *, head_timeout: float, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self._head_timeout = head_timeout

    def __call__(self) -> RequestHandler:
        return _ClientConnection(
            self, head_timeout=self._head_timeout, loop=self._loop, **self._kwargs
        )

    def _make_request(
        self, message: Any, payload: Any, protocol: Any, writer: Any, task: Any
    ) -> web.BaseRequest:
        protocol.head_complete()
        return super()._make_request(message, payload, protocol, writer, task)


def public_server(gateway: Gateway, model: GatewayConfig) -> web.Server:
    """The low-level aiohttp server for the public listener: no router, no middleware stack,
    one handler; the gateway does its own routing."""
    limits = model.client
    return _Server(
        gateway.handle,
        head_timeout=limits.header_timeout,
        access_log=None,
        keepalive_timeout=limits.keepalive_timeout,
        max_line_size=limits.max_line_size,
        max_field_size=limits.max_field_size,
        max_headers=limits.max_headers,
        # Bodies are relayed as the client encoded them; decoding would corrupt them.
        auto_decompress=False,
    )


async def serve(server: web.Server, sock: socket.socket) -> asyncio.AbstractServer:
    loop = asyncio.get_running_loop()
    return await loop.create_server(server, sock=sock, backlog=1024)


async def drain(server: web.Server, listener: asyncio.AbstractServer, timeout: float) -> None:
    """Stop accepting, let in-flight requests finish (up to `timeout`), close the rest."""
    listener.close()
    server.pre_shutdown()
    await server.shutdown(timeout)


async def start_app(
    app: web.Application,
    *,
    listen: str | None = None,
    path: str | None = None,
    sock: socket.socket | None = None,
) -> web.AppRunner:
    """Serve an aiohttp app (admin, control) on a TCP address, a unix socket or a socket."""
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site: Any
    if sock is not None:
        site = web.SockSite(runner, sock)
    elif path is not None:
        site = web.UnixSite(runner, path)
    else:
        host, port = split_listen(listen or "127.0.0.1:0")
        site = web.TCPSite(runner, host, port, reuse_address=True)
    await site.start()
    return runner
