"""A small HTTP/1.1 load generator on asyncio (uvloop when installed), for bench.py.

Two modes over keep-alive connections:
- `closed_loop`: N connections, each sends its next request when the previous answer is in
  (what wrk does; bench.py uses wrk when it is installed, this otherwise).
- `fixed_rate`: an open loop at a set rate (what wrk2 does), for latency at a known load. A
  request is due at t0 + i/rate whether or not earlier ones are answered; when no connection
  is free it waits, and its latency counts from when it was due, so a stalled server cannot
  hide its queue (coordinated omission). A request sent on a free connection counts from its
  actual send, so the generator's own timer lateness is not charged to the server.
"""

from __future__ import annotations

import asyncio
import math
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httptools

# Refused or reset connections, and answers that are not HTTP.
_FAILURES = (OSError, httptools.HttpParserError)


@dataclass
class Result:
    """Latencies (seconds) of answered requests, and what went wrong."""

    duration: float
    latencies: list[float] = field(default_factory=list)
    bad_status: int = 0
    errors: int = 0

    @property
    def requests(self) -> int:
        return len(self.latencies)

    @property
    def rps(self) -> float:
        return self.requests / self.duration if self.duration else 0.0

    def percentile(self, p: float) -> float:
        """The p-th percentile latency in milliseconds (nearest rank); NaN when empty."""
        if not self.latencies:
            return math.nan
        ordered = sorted(self.latencies)
        index = min(len(ordered) - 1, max(0, math.ceil(p / 100 * len(ordered)) - 1))
        return ordered[index] * 1000


class _Connection(asyncio.Protocol):
    """One keep-alive connection; `request()` sends one request and returns its status."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future[int] | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(exc)

    def on_message_complete(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(self.parser.get_status_code())

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(exc or ConnectionResetError("closed by the server"))

    def _fail(self, exc: BaseException) -> None:
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(exc)
        if self.transport is not None:
            self.transport.close()

    async def request(self, payload: bytes) -> int:
        if self.transport is None or self.closed:
            raise ConnectionResetError("connection closed")
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(payload)
        return await self.waiter


class Target:
    """Where to send, and the request bytes, built once."""

    def __init__(
        self,
        url: str,
        headers: Mapping[str, str] | None = None,
        context: ssl.SSLContext | None = None,
    ) -> None:
        parts = urlsplit(url)
        self.host = parts.hostname or "127.0.0.1"
        https = parts.scheme == "https"
        self.port = parts.port or (443 if https else 80)
        self.ssl = (context or ssl.create_default_context()) if https else None
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        lines = [f"GET {path} HTTP/1.1", f"Host: {parts.netloc}"]
        lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
        self.payload = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    async def connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        _, protocol = await loop.create_connection(_Connection, self.host, self.port, ssl=self.ssl)
        return protocol


async def closed_loop(target: Target, connections: int, duration: float) -> Result:
    """`connections` clients, each back to back, for `duration` seconds."""
    result = Result(duration)
    deadline = time.perf_counter() + duration

    async def client() -> None:
        conn: _Connection | None = None
        while time.perf_counter() < deadline:
            try:
                if conn is None or conn.closed:
                    conn = await target.connect()
                start = time.perf_counter()
                status = await conn.request(target.payload)
            except _FAILURES:
                result.errors += 1
                conn = None
                await asyncio.sleep(0.01)
                continue
            result.latencies.append(time.perf_counter() - start)
            result.bad_status += status >= 400
        if conn is not None and conn.transport is not None:
            conn.transport.close()

    await asyncio.gather(*(client() for _ in range(connections)))
    return result


async def fixed_rate(
    target: Target, rate: float, duration: float, max_connections: int = 64
) -> Result:
    """`rate` requests/s for `duration` seconds over at most `max_connections` connections."""
    result = Result(duration)
    idle: list[_Connection] = []
    opened = 0
    freed = asyncio.Condition()
    start = time.perf_counter()

    async def one(due: float) -> None:
        nonlocal opened
        queued = False
        async with freed:
            while not idle and opened >= max_connections:
                queued = True
                await freed.wait()
            conn = idle.pop() if idle else None
            if conn is None:
                opened += 1
        try:
            if conn is None or conn.closed:
                conn = await target.connect()
            sent = time.perf_counter()
            status = await conn.request(target.payload)
        except _FAILURES:
            result.errors += 1
            conn = None
        else:
            result.latencies.append(time.perf_counter() - (due if queued else sent))
            result.bad_status += status >= 400
        async with freed:
            if conn is not None and not conn.closed:
                idle.append(conn)
            else:
                opened -= 1
            freed.notify()

    tasks: set[asyncio.Task[None]] = set()
    total = int(rate * duration)
    for i in range(total):
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.ensure_future(one(due))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:
        await asyncio.wait(tasks, timeout=30)
    for conn in idle:
        if conn.transport is not None:
            conn.transport.close()
    return result


def run(coro: object) -> Result:
    """Run a generator coroutine on uvloop (asyncio's loop when uvloop is missing)."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        return asyncio.run(coro)  # type: ignore[arg-type]
    return uvloop.run(coro)  # type: ignore[arg-type]
