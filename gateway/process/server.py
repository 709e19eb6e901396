"""Listening sockets and servers: the public listener (per worker) and admin/control listeners."""

from __future__ import annotations

import errno
import logging
import socket
import sys
from typing import Any

from aiohttp import web

from gateway.app import Gateway
from gateway.config.models import GatewayConfig, split_listen
from gateway.http.listener import Listener
from gateway.http.tls import redirect_handler

log = logging.getLogger("gateway.server")


def listening_socket(listen: str, *, reuse_port: bool) -> socket.socket:
    """A bound, listening TCP socket; with `reuse_port`, every worker has its own (the
    kernel spreads connections across them evenly, unlike one shared accept queue)."""
    sock = _bound_socket(listen, reuse_port=reuse_port)
    try:
        sock.listen(1024)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def worker_socket(listen: str) -> socket.socket:
    """A worker's public socket (SO_REUSEPORT), bound but not listening: the worker's server
    listens once it serves. Until then the kernel gives it no connection (they go to the workers
    that serve, or are refused while none does) rather than queueing them, unanswered, for as
    long as the worker takes to start (seconds on a busy machine)."""
    return _bound_socket(listen, reuse_port=True)


def _bound_socket(listen: str, *, reuse_port: bool) -> socket.socket:
    host, port = split_listen(listen)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


class StartError(Exception):
    """`gateway run` cannot start; the message says what failed and where, in one line."""


def claim_public_port(listen: str) -> socket.socket | None:
    """Keep every other gateway off `listen` for as long as the returned lock stays open.

    SO_REUSEPORT lets any socket of the same user join a port's group, so the kernel alone cannot
    tell a second gateway from our own next worker: started on the same port, it would silently
    take a share of the connections, with its own config. So the supervisor, before any worker:
    1. takes a lock named after the address: on Linux an abstract unix socket, which lives in the
       network namespace like the port itself and which the kernel releases however the
       supervisor ends (no stale file after a SIGKILL). Two supervisors started in the same
       instant cannot both get it;
    2. while holding it, binds the address WITHOUT SO_REUSEPORT, and lets go at once: that bind
       fails whenever anything listens there (an older gateway without the lock, another program,
       or a wildcard listener on the same port);
    3. then binds each worker's SO_REUSEPORT socket itself and hands it over (`listen_fd`), so
       every socket of the group comes from this one supervisor, however often workers restart
       (`worker_socket`: the worker listens on it once it serves).
    Returns the lock (None where abstract sockets do not exist); raises `StartError`."""
    host, port = split_listen(listen)
    lock: socket.socket | None = None
    if sys.platform.startswith("linux"):
        lock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            lock.bind(f"\0gateway-listen:{host}:{port}")
        except OSError as exc:
            lock.close()
            lock = None
            if exc.errno == errno.EADDRINUSE:
                raise StartError(
                    f"cannot serve {listen}: another gateway holds port {port} "
                    "(stop it first, or choose another `listen`)"
                ) from None
            # Elsewhere (a sandbox without abstract sockets) the probe below still guards.
    try:
        _bound_socket(listen, reuse_port=False).close()
    except OSError as exc:
        if lock is not None:
            lock.close()
        if exc.errno == errno.EADDRINUSE:
            raise StartError(
                f"cannot serve {listen}: port {port} is in use "
                "(by another gateway or another program)"
            ) from None
        raise StartError(f"cannot serve {listen}: {exc.strerror}") from None
    return lock


def public_server(gateway: Gateway, model: GatewayConfig) -> Listener:
    """The public listener: the gateway's own HTTP/1.1 server (see `gateway.http.listener`),
    over TLS when the config has a `tls` section."""
    return Listener(gateway.handle, model.client, gateway.tls, gateway.metrics.accept_refused)


def redirect_server(model: GatewayConfig) -> Listener | None:
    """The `redirect_http` listener (308 to HTTPS), when configured."""
    if model.redirect_http is None:
        return None
    return Listener(redirect_handler(split_listen(model.listen)[1]), model.client)


async def serve(server: Listener, sock: socket.socket) -> Listener:
    await server.serve(sock)
    return server


async def drain(server: Listener, timeout: float) -> int:
    """Stop accepting, let in-flight requests finish (up to `timeout`), close the rest;
    returns how many were cut off."""
    return await server.shutdown(timeout)


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
