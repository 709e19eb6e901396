"""Writing a gateway `Response` to the client.

A response whose body is already whole (the common case: small upstream answers, cache
hits, errors) is written as one buffer — status line, headers and body — straight to the
transport. aiohttp's own response object would do the same in about twice the CPU time,
which on the proxy's hot path is a large share of the budget. Streamed bodies go through
aiohttp's `StreamResponse`, whose flow control they need.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Generator
from email.utils import formatdate
from http import HTTPStatus
from time import time
from typing import Any

from aiohttp import web
from multidict import CIMultiDict

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

    def __await__(self) -> Generator[Any, Any, None]:
        return (yield from ())


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
        if self._data:
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


def _bodiless(raw: web.BaseRequest, status: int) -> bool:
    return raw.method == "HEAD" or status in (204, 304) or status < 200


def _head(raw: web.BaseRequest, status: int, headers: CIMultiDict[str], keep_alive: bool) -> bytes:
    """Status line and headers, with Date and the Connection header the client needs."""
    if "Date" not in headers:
        headers["Date"] = http_date()
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
    # surrogateescape: header bytes that are not UTF-8 go out exactly as they came in.
    return head.encode("utf-8", "surrogateescape")


def _keep_alive(raw: web.BaseRequest) -> bool:
    # A request body left unread (413, 408, an early answer) makes the connection unusable
    # for another request: say so, and aiohttp drains a little of it, then closes.
    return raw.keep_alive and not (raw.body_exists and not raw.content.is_eof())


def complete(raw: web.BaseRequest, response: Response) -> tuple[Complete, int]:
    """Serialise a response with a whole body; returns it and the body bytes sent."""
    status = response.status
    headers = response.headers
    body = response.body
    if _bodiless(raw, status):
        body = b""  # a HEAD answer keeps the upstream's Content-Length: it describes the GET
    else:
        headers["Content-Length"] = str(len(body))
    keep_alive = _keep_alive(raw)
    data = _head(raw, status, headers, keep_alive)
    return Complete(data + body if body else data, status, keep_alive), len(body)


def _without_line_breaks(lines: list[str]) -> str:
    # A header value with CR or LF would let whoever wrote it (an upstream, a policy's data)
    # split the response: such headers are dropped.
    log.warning("dropped a response header containing a line break")
    kept = [lines[0], *(line for line in lines[1:-1] if line.count("\r") == 1 == line.count("\n"))]
    return "".join([*kept, "\r\n"])


async def stream(raw: web.BaseRequest, response: Response, rid: str) -> tuple[Complete, int]:
    """Send a streamed body chunk by chunk, with the client's flow control.

    Declared lengths are kept; otherwise HTTP/1.1 clients get chunked encoding and HTTP/1.0
    clients a body that ends when the connection closes.
    """
    body = response.stream
    status, headers = response.status, response.headers
    transport = raw.transport
    if body is None or transport is None or transport.is_closing():
        if body is not None:
            body.close()  # the client went away before the answer: nothing to write
        return Complete(b"", status, False), 0
    keep_alive = _keep_alive(raw)
    chunked = False
    if _bodiless(raw, status):
        body.close()
        transport.write(_head(raw, status, headers, keep_alive))
        return Complete(b"", status, keep_alive), 0
    headers.popall("Transfer-Encoding", None)
    if body.length is not None:
        headers["Content-Length"] = str(body.length)
    elif raw.version >= (1, 1):
        headers["Transfer-Encoding"] = "chunked"
        chunked = True
    else:
        keep_alive = False
    transport.write(_head(raw, status, headers, keep_alive))
    protocol = raw.protocol
    sent = 0
    try:
        async for chunk in body:
            if transport.is_closing():
                raise ConnectionResetError("client went away")
            transport.write(b"%x\r\n%b\r\n" % (len(chunk), chunk) if chunked else chunk)
            sent += len(chunk)
            if protocol.writing_paused:
                await raw.writer.drain()  # the client reads slower than the upstream sends
        if chunked:
            transport.write(b"0\r\n\r\n")
    except (UpstreamError, ConnectionError) as exc:
        # Mid-body there is no status left to send: close, so the client sees the truncation.
        body.close()
        transport.close()
        log.info("request %s: response cut short: %s", rid, type(exc).__name__)
        return Complete(b"", status, False), sent
    if not keep_alive:
        transport.close()  # a body delimited by the close (HTTP/1.0 without length)
    return Complete(b"", status, keep_alive), sent
