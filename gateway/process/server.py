"""Listening sockets and servers: the public listener (per worker) and admin/control listeners."""

from __future__ import annotations

import logging
import socket
from typing import Any

from aiohttp import web

from gateway.app import Gateway
from gateway.config.models import GatewayConfig, split_listen
from gateway.http.listener import Listener
from gateway.http.tls import redirect_handler

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


def public_server(gateway: Gateway, model: GatewayConfig) -> Listener:
    """The public listener: the gateway's own HTTP/1.1 server (see `gateway.http.listener`),
    over TLS when the config has a `tls` section."""
    return Listener(gateway.handle, model.client, gateway.tls)


def redirect_server(model: GatewayConfig) -> Listener | None:
    """The `redirect_http` listener (308 to HTTPS), when configured."""
    if model.redirect_http is None:
        return None
    return Listener(redirect_handler(split_listen(model.listen)[1]), model.client)


async def serve(server: Listener, sock: socket.socket) -> Listener:
    await server.serve(sock)
    return server


async def drain(server: Listener, timeout: float) -> None:
    """Stop accepting, let in-flight requests finish (up to `timeout`), close the rest."""
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
