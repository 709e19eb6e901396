"""Upstream targets: a bounded keep-alive pool per target, round robin, refusing targets skipped
a while.

A target opens at most `max_connections`; past that a request waits in a queue of at most
`max_pending` for a connection another request releases (handed over directly, first come first
served), and past that it is refused (`UpstreamOverloaded`). Every released connection may stay
idle (`max_idle` defaults to `max_connections`): the pool is what the traffic of the last
`keepalive` seconds needed, because idle connections unused that long are closed from the cold
end. A burst therefore reuses connections instead of opening new ones to the API.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar
from urllib.parse import urlsplit

from gateway.config.models import UpstreamConfig
from gateway.errors import UpstreamOverloaded, UpstreamTLSError
from gateway.telemetry.pools import PoolFigures
from gateway.upstream.connection import UpstreamConnection
from gateway.upstream.tls import Sessions, client_context

log = logging.getLogger("gateway.upstream")

_Conn = TypeVar("_Conn", bound=UpstreamConnection)
Handover = asyncio.Future["UpstreamConnection | None"]
"""What a queued request waits for: a connection, or None for a free slot to open one in."""


class PooledConnection(UpstreamConnection):
    """An upstream connection that gives its target's slot back when it closes."""

    def __init__(self, target: Target) -> None:
        super().__init__(target._release)
        self._target = target
        self.counted = False
        """True once the connection holds one of its target's `max_connections` slots."""

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if self.counted:
            self.counted = False
            self._target._free_slot()


class Target:
    """One upstream server: its connections, the idle ones (most recently used first out) and
    the requests waiting for one."""

    def __init__(self, url: str, config: UpstreamConfig, tls: ssl.SSLContext | None = None) -> None:
        parts = urlsplit(url)
        self.url = url
        self.host = parts.hostname or "127.0.0.1"
        self.tls = parts.scheme == "https"
        self.port = parts.port or (443 if self.tls else 80)
        self.host_header = parts.netloc.rsplit("@", 1)[-1]
        self.base_path = parts.path.rstrip("/")
        self.keepalive = config.keepalive
        self.max_connections = config.max_connections
        self.max_pending = config.max_pending
        max_idle = config.max_connections if config.max_idle is None else config.max_idle
        self.max_idle = max_idle if config.keepalive > 0 else 0
        self.fail_timeout = config.fail_timeout
        self.down_until = 0.0
        self.open = 0
        """Connections holding a slot: open, or being opened."""
        self.opened = 0
        """Connections opened since start (a counter: its rate is the connection churn)."""
        self._closed = False
        self._idle: deque[UpstreamConnection] = deque()
        self._waiters: deque[Handover] = deque()
        if self.tls and tls is None:
            tls = client_context(config.tls, "", ())
        self._ssl = Sessions(tls) if self.tls and tls is not None else None
        self.server_name = config.tls.server_name or self.host

    async def acquire(self, timeout: float, *, fresh: bool = False) -> UpstreamConnection:
        """A connection for one exchange: an idle one (unless `fresh`), a new one while under
        `max_connections`, else one released by another request within `timeout`.
        Raises `UpstreamOverloaded` (queue full, or no connection in time), TimeoutError or
        OSError (the connect failed, and the target is marked down)."""
        deadline = time.monotonic() + timeout
        while True:
            if not fresh:
                conn = self.pooled()
                if conn is not None:
                    return conn
            if self.open < self.max_connections:
                self.open += 1
                return await self._open(timeout)
            if len(self._waiters) >= self.max_pending:
                raise UpstreamOverloaded()
            waiter: Handover = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                async with asyncio.timeout(timeout):
                    conn = await waiter
            except BaseException as exc:
                self._abandon(waiter)
                if isinstance(exc, TimeoutError):
                    raise UpstreamOverloaded() from None
                raise
            if conn is None:
                return await self._open(timeout)  # a slot was handed over: open in it
            if fresh and isinstance(conn, PooledConnection) and conn.counted:
                # A retry wants a new connection: this one's slot is taken over for it.
                conn.counted = False
                conn.close()
                return await self._open(timeout)
            if not conn.closed:
                return conn
            # Closed between the hand-over and now: its slot went on to the next in line (or
            # back to the target); try again with what is left of the wait.
            timeout = deadline - time.monotonic()
            if timeout <= 0:
                raise UpstreamOverloaded()

    def _abandon(self, waiter: Handover) -> None:
        # Timed out or cancelled: what may have been handed over in the meantime goes on.
        if not waiter.done() or waiter.cancelled():
            waiter.cancel()
            if waiter in self._waiters:  # still queued: nothing was handed over
                self._waiters.remove(waiter)
        else:
            conn = waiter.result()
            if conn is None:
                self._free_slot()
            else:
                self._release(conn)

    async def _open(self, timeout: float) -> UpstreamConnection:
        # The caller holds a slot for this connection; it passes to the connection once made.
        try:
            conn = await self._connect(timeout, lambda: PooledConnection(self))
        except BaseException:
            self._free_slot()
            raise
        conn.counted = True
        if conn.closed:  # lost before it was counted: the slot would never come back
            conn.counted = False
            self._free_slot()
        return conn

    def pooled(self) -> UpstreamConnection | None:
        """An idle connection that is still fresh enough to trust, if any."""
        idle = self._idle
        cutoff = time.monotonic() - self.keepalive
        while idle:
            conn = idle.pop()
            if not conn.closed and conn.idle_since > cutoff:
                return conn
            conn.close()
        return None

    async def connect(self, timeout: float) -> UpstreamConnection:
        """A new connection outside the pool and its limits (a WebSocket tunnel, which leaves
        it for good); raises TimeoutError or OSError (and marks the target down)."""
        return await self._connect(timeout, lambda: UpstreamConnection(self._release))

    async def _connect(self, timeout: float, factory: Callable[[], _Conn]) -> _Conn:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                _, conn = await loop.create_connection(
                    factory,
                    self.host,
                    self.port,
                    ssl=self._ssl,
                    server_hostname=self.server_name if self._ssl else None,
                )
        except ssl.SSLError as exc:
            # Before OSError (its base): a certificate that does not verify, or a handshake
            # the target refused. Nothing was sent.
            if self.down_until <= time.monotonic():  # once per fail_timeout, not per request
                log.warning("TLS to %s failed: %s", self.url, _reason(exc))
            self.down_until = time.monotonic() + self.fail_timeout
            if self._ssl is not None:
                self._ssl.forget()
            raise UpstreamTLSError() from exc
        except (OSError, TimeoutError):
            self.down_until = time.monotonic() + self.fail_timeout
            raise
        self.opened += 1
        self.down_until = 0.0
        return conn

    def _release(self, conn: UpstreamConnection) -> None:
        if self._ssl is not None and conn.used == 1 and conn.transport is not None:
            # Once per connection: its session is offered to the next new connection.
            self._ssl.keep(conn.transport.get_extra_info("ssl_object"))
        if conn.closed or self._closed:
            conn.close()
            return
        waiters = self._waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return
        idle = self._idle
        now = time.monotonic()
        # The cold end: connections no request needed for `keepalive` seconds go, so the
        # pool shrinks back after a burst.
        cutoff = now - self.keepalive
        while idle and idle[0].idle_since <= cutoff:
            idle.popleft().close()
        if len(idle) >= self.max_idle:
            conn.close()
            return
        conn.idle_since = now
        idle.append(conn)

    def _free_slot(self) -> None:
        # A counted connection closed (or failed to open): its slot goes to the first live
        # waiter, who opens a connection in it, or back to the target.
        waiters = self._waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self.open -= 1

    @property
    def idle(self) -> int:
        """Idle connections still open."""
        return sum(not conn.closed for conn in self._idle)

    @property
    def pending(self) -> int:
        """Requests waiting for a connection."""
        return len(self._waiters)

    def close(self) -> None:
        """Close idle connections; busy ones close when their exchange ends."""
        self._closed = True
        while self._idle:
            self._idle.pop().close()


class Upstream:
    """A named pool of equivalent targets, taken in turn."""

    def __init__(self, name: str, config: UpstreamConfig, base: str = "") -> None:
        """`base`: the folder that relative TLS paths are relative to (the config file's).
        Raises `CertProblem` for a TLS file that cannot be used."""
        self.name = name
        self.config = config
        tls = None
        if any(url.startswith("https:") for url in config.targets):
            tls = client_context(config.tls, base, ("upstreams", name, "tls"))
        self.targets = [Target(url, config, tls) for url in config.targets]
        self._next = 0

    def candidates(self) -> Sequence[Target]:
        """Targets to try for the next request: round robin over the healthy ones, then the
        ones marked down (soonest to recover first), so a request is only refused when all are."""
        targets = self.targets
        if len(targets) == 1:
            return targets
        now = time.monotonic()
        up = [t for t in targets if t.down_until <= now]
        down = sorted((t for t in targets if t.down_until > now), key=lambda t: t.down_until)
        if up:
            start = self._next % len(up)
            up = up[start:] + up[:start]
        self._next += 1
        return up + down

    def figures(self) -> Iterator[PoolFigures]:
        """Each target's pool, for the metrics."""
        for t in self.targets:
            yield PoolFigures(self.name, t.url, t.open, t.idle, t.pending, t.opened)

    def close(self) -> None:
        for target in self.targets:
            target.close()


def _reason(exc: ssl.SSLError) -> str:
    verify = getattr(exc, "verify_message", None)
    return str(verify or exc.reason or exc)
