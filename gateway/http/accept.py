"""Accepting client connections, and what happens when no file descriptor is free.

The listener accepts by itself rather than through `loop.create_server`, because neither loop
says when it runs out of descriptors: uvloop's libuv, on EMFILE/ENFILE, closes a reserved
descriptor, accepts every waiting connection and closes it at once (clients get a reset and
nothing is logged or counted), and asyncio logs an error through the loop's exception handler
every second while pausing. Here a failed accept is counted (`on_refused`), a warning is logged
at most every `WARN_EVERY` seconds with the number of refusals since the last one, and
accepting pauses until a descriptor is freed (`resume`, called when a connection closes) or
`RETRY` seconds have passed: the worker does not spin, and the clients that came meanwhile
wait in the kernel's backlog instead of being cut off.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import resource
import socket
import ssl
from collections.abc import Callable

log = logging.getLogger("gateway.server")

WARN_EVERY = 10.0
RETRY = 0.5
_BATCH = 64  # accepts per readiness event: others get a turn of the loop
_OUT_OF_FDS = {errno.EMFILE: "EMFILE", errno.ENFILE: "ENFILE"}
_OUT_OF_MEMORY = {errno.ENOBUFS: "ENOBUFS", errno.ENOMEM: "ENOMEM"}
_HARMLESS = frozenset({errno.ECONNABORTED, errno.EPROTO, errno.EPERM})


class Acceptor:
    """Accepts connections on a listening socket into protocols made by `factory`."""

    def __init__(
        self,
        sock: socket.socket,
        factory: Callable[[], asyncio.Protocol],
        on_refused: Callable[[str], None] | None = None,
        *,
        tls: ssl.SSLContext | None = None,
        handshake_timeout: float | None = None,
    ) -> None:
        self._sock = sock
        self._tls = tls
        self._handshake_timeout = handshake_timeout if tls is not None else None
        self._factory = factory
        self._on_refused = on_refused
        self._loop = asyncio.get_running_loop()
        self._reading = False
        self._closed = False
        self._retry: asyncio.TimerHandle | None = None
        self._warned_at = float("-inf")
        self._unreported = 0
        self.out_of_fds = False
        """Between a refused accept and the next time the backlog is found empty."""

    def start(self) -> None:
        self._read()

    def close(self) -> None:
        """Stop accepting (the socket is closed)."""
        self._closed = True
        self._unread()
        if self._retry is not None:
            self._retry.cancel()
        self._sock.close()

    def resume(self) -> None:
        """A descriptor may be free again: accept again if paused."""
        if not self._reading and not self._closed:
            if self._retry is not None:
                self._retry.cancel()
                self._retry = None
            self._read()

    def _read(self) -> None:
        self._loop.add_reader(self._sock.fileno(), self._accept)
        self._reading = True

    def _unread(self) -> None:
        if self._reading:
            self._loop.remove_reader(self._sock.fileno())
            self._reading = False

    def _accept(self) -> None:
        loop = self._loop
        for _ in range(_BATCH):
            try:
                conn, _ = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                self._recovered()
                return
            except OSError as exc:
                if exc.errno in _HARMLESS:
                    continue  # the client gave up before being accepted
                self._refused(exc)
                return
            # Non-blocking mode is set by connect_accepted_socket (asyncio) or libuv (uvloop).
            task = loop.create_task(
                loop.connect_accepted_socket(
                    self._factory,
                    conn,
                    ssl=self._tls,
                    ssl_handshake_timeout=self._handshake_timeout,
                )
            )
            task.add_done_callback(_retrieve)

    def _refused(self, exc: OSError) -> None:
        name = _OUT_OF_FDS.get(exc.errno or 0) or _OUT_OF_MEMORY.get(exc.errno or 0)
        if name is None:
            log.error("accepting a connection failed: %s", exc)
            name = errno.errorcode.get(exc.errno or 0, "OSError")
        if name in _OUT_OF_FDS.values():
            self.out_of_fds = True
        if self._on_refused is not None:
            self._on_refused(name)
        self._unreported += 1
        now = self._loop.time()
        if now - self._warned_at >= WARN_EVERY:
            soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
            log.warning(
                "cannot accept connections (%s): %d refused since the last warning; open-file "
                "limit %d (hard %d); accepting pauses until a descriptor is free",
                name,
                self._unreported,
                soft,
                hard,
            )
            self._warned_at = now
            self._unreported = 0
        # Not spinning: the socket stays readable while clients wait, so stop watching it.
        self._unread()
        if self._retry is None or self._retry.cancelled():
            self._retry = self._loop.call_later(RETRY, self._retry_now)

    def _retry_now(self) -> None:
        self._retry = None
        self.resume()

    def _recovered(self) -> None:
        if self.out_of_fds:
            self.out_of_fds = False
            log.info(
                "accepting connections again (%d refused since the last warning)",
                self._unreported,
            )
            self._unreported = 0


def _retrieve(task: asyncio.Task[object]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.info("a connection failed as it was accepted: %s", task.exception())
