"""The public listener: HTTP/1.1 over httptools (llhttp), one request at a time per connection.

A lean server on purpose. aiohttp's server (request object, payload stream, handler task and
response object per request) cost more CPU per request than everything the gateway does for a
cached answer. Here a request head is digested while it is parsed (`Incoming`), one task per
connection runs the gateway's handler for each request in turn (no task per request), and
whole responses leave in one write (`gateway.http.respond`); see `gateway.http.connection`.

What the listener adds:
- its own accept loop (`gateway.http.accept`): out of file descriptors, it warns, counts and
  pauses instead of dropping clients silently;
- one sweep timer for all its connections' timeouts (head, whole request, keep-alive, send),
  not a timer per request;
- on shutdown, idle connections close at once and busy ones after their current answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections.abc import Callable

from gateway.config.models import ClientLimits
from gateway.http.accept import Acceptor
from gateway.http.connection import ClientConnection, Handler

log = logging.getLogger("gateway.server")

__all__ = ["ClientConnection", "Handler", "Listener"]


class Listener:
    """Creates a `ClientConnection` per accepted client; closes them all on shutdown."""

    def __init__(
        self,
        handler: Handler,
        limits: ClientLimits,
        tls: ssl.SSLContext | None = None,
        on_refused: Callable[[str], None] | None = None,
    ) -> None:
        self.handler = handler
        self.tls = tls
        """HTTPS when set (a `gateway.http.tls.ServerTLS`, swapped on reload)."""
        self.on_refused = on_refused
        """Called with the errno's name (`EMFILE`) of every accept refused for want of
        descriptors or memory (a metric)."""
        self.limits = limits
        self.head_limit = limits.max_line_size + limits.max_headers * limits.max_field_size
        self.connections: set[ClientConnection] = set()
        self.closing = False
        self._acceptor: Acceptor | None = None
        self._sweeper: asyncio.TimerHandle | None = None
        self._empty: asyncio.Event | None = None
        timeouts = [limits.header_timeout, limits.send_timeout, limits.request_timeout]
        if limits.keepalive_timeout > 0:
            timeouts.append(limits.keepalive_timeout)
        self._sweep_every = min(1.0, max(0.02, min(timeouts) / 4))

    def __call__(self) -> ClientConnection:
        return ClientConnection(self)

    async def serve(self, sock: socket.socket) -> None:
        """Accept connections on a bound socket (listening from here on if it was not)."""
        loop = asyncio.get_running_loop()
        # The supervisor hands workers a socket bound but not listening, so the kernel gives
        # a starting worker no connection (`gateway.process.server.worker_socket`).
        sock.listen(1024)
        # A TLS handshake is bounded like a head; one that fails (plain HTTP, garbage, a
        # client certificate refused) closes the connection, logged at debug level only.
        self._acceptor = Acceptor(
            sock, self, self.on_refused, tls=self.tls, handshake_timeout=self.limits.header_timeout
        )
        self._acceptor.start()
        self._sweeper = loop.call_later(self._sweep_every, self._sweep)

    def _sweep(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        for conn in list(self.connections):
            conn.check_timeouts(now)
        self._sweeper = loop.call_later(self._sweep_every, self._sweep)

    def opened(self, conn: ClientConnection) -> None:
        self.connections.add(conn)

    @property
    def out_of_fds(self) -> bool:
        """Accepting is paused: no file descriptor was free (EMFILE, ENFILE)."""
        return self._acceptor is not None and self._acceptor.out_of_fds

    def forget(self, conn: ClientConnection) -> None:
        self.connections.discard(conn)
        if self._acceptor is not None:
            self._acceptor.resume()  # its descriptor is free again
        if not self.connections and self._empty is not None:
            self._empty.set()

    async def shutdown(self, timeout: float) -> int:
        """Stop accepting; let requests in progress finish (up to `timeout`); close the rest.
        Returns how many requests were still in progress then, and so were cut off."""
        self.closing = True
        if self._acceptor is not None:
            self._acceptor.close()
        for conn in list(self.connections):
            conn.close_when_idle()
        if self.connections:
            self._empty = asyncio.Event()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._empty.wait(), timeout)
        # A handler still running is cancelled, not left waiting for an answer that nobody
        # will receive: so each writes its access line (status 0) before the process ends.
        cut_off = [conn.cut_off() for conn in list(self.connections)]
        tasks = [task for task in cut_off if task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=1)
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        return len(tasks)
