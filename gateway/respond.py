"""Writing a gateway `Response` to the client.

A response whose body is already whole (the common case: small upstream answers, cache
hits, errors) is written as one buffer — status line, headers and body — straight to the
transport. aiohttp's own response object would do the same in about twice the CPU time,
which on the proxy's hot path is a large share of the budget. Streamed bodies go through
aiohttp's `StreamResponse`, whose flow control they need.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Iterator
from email.utils import formatdate
from http import HTTPStatus
from time import time

from aiohttp import web

from gateway.errors import UpstreamError
from gateway.http import Response

log = logging.getLogger("gateway.respond")

_REASONS = {status.value: status.phrase for status in HTTPStatus}
_DRAIN_ABOVE = 64 * 1024
_date: list[object] = [0, ""]


def http_date() -> str:
    """The current `Date` header value, formatted once per second."""
    now = int(time())
    if now != _date[0]:
        _date[0], _date[1] = now, formatdate(now, usegmt=True)
    return _date[1]  # type: ignore[return-value]


class _Done:
    """An awaitable that is already done: cheaper than a coroutine on every request."""

    __slots__ = ()

    def __await__(self) -> Iterator[None]:
        return iter(())


_DONE = _Done()


class Complete:
    """A whole response, written in one go; quacks like the `StreamResponse` aiohttp's request
    handler expects back (awaitable `prepare` and `write_eof`, `keep_alive`)."""

    __slots__ = ("_data", "keep_alive", "status")

    def __init__(self, data: bytes, status: int, keep_alive: bool) -> None:
        self._data = data
        self.status = status
        self.keep_alive = keep_alive

    def prepare(self, request: web.BaseRequest) -> Awaitable[None]:
        transport = request.transport
        if transport is None or transport.is_closing():
            raise ConnectionResetError("client went away")
        transport.write(self._data)
        _sent(request)
        if len(self._data) > _DRAIN_ABOVE:
            return request.writer.drain()
        return _DONE

    def write_eof(self) -> Awaitable[None]:
        return _DONE


def _sent(request: web.BaseRequest) -> None:
    # The public listener's connection handler times request heads between answers.
    response_sent = getattr(request.protocol, "response_sent", None)
    if response_sent is not None:
        response_sent()


def complete(raw: web.BaseRequest, response: Response) -> tuple[Complete, int]:
    """Serialise a response with a whole body; returns it and the body bytes sent."""
    status = response.status
    headers = response.headers
    body = response.body
    bodiless = raw.method == "HEAD" or status in (204, 304) or status < 200
    if bodiless:
        body = b""  # a HEAD answer keeps the upstream's Content-Length: it describes the GET
    else:
        headers["Content-Length"] = str(len(body))
    if "Date" not in headers:
        headers["Date"] = http_date()
    # A request body left unread (413, 408, an early answer) makes the connection unusable
    # for another request: say so, and aiohttp drains a little of it, then closes.
    keep_alive = raw.keep_alive and not (raw.body_exists and not raw.content.is_eof())
    version = raw.version
    if version.minor == 0 and version.major == 1:
        if keep_alive:
            headers["Connection"] = "keep-alive"
    elif not keep_alive:
        headers["Connection"] = "close"
    lines = [f"HTTP/{version.major}.{version.minor} {status} {_REASONS.get(status, '')}\r\n"]
    lines.extend(f"{name}: {value}\r\n" for name, value in headers.items())
    lines.append("\r\n")
    head = "".join(lines)
    if head.count("\n") != len(lines) or head.count("\r") != len(lines):
        head = _without_line_breaks(lines)
    data = head.encode("utf-8", "surrogateescape")
    return Complete(data + body if body else data, status, keep_alive), len(body)


def _without_line_breaks(lines: list[str]) -> str:
    # A header value with CR or LF would let whoever wrote it (an upstream, a policy's data)
    # split the response: such headers are dropped.
    log.warning("dropped a response header containing a line break")
    kept = [lines[0], *(line for line in lines[1:-1] if line.count("\r") == 1 == line.count("\n"))]
    return "".join([*kept, "\r\n"])


async def stream(
    raw: web.BaseRequest, response: Response, rid: str
) -> tuple[web.StreamResponse, int]:
    """Send a streamed body chunk by chunk, with the client's flow control."""
    body = response.stream
    if body is None:
        raise ValueError("stream() needs a streamed response")
    out = web.StreamResponse(status=response.status, headers=response.headers)
    if body.length is not None:
        out.content_length = body.length
    sent = 0
    try:
        await out.prepare(raw)
        async for chunk in body:
            await out.write(chunk)
            sent += len(chunk)
        await out.write_eof()
        _sent(raw)
    except (UpstreamError, ConnectionError) as exc:
        # Mid-body there is no status left to send: close, so the client sees the truncation.
        body.close()
        if raw.transport is not None:
            raw.transport.close()
        log.info("request %s: response cut short: %s", rid, type(exc).__name__)
    return out, sent
