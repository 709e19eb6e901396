"""Writing a gateway `Response` to the client.

A response whose body is already whole (the common case: small upstream answers, cache
hits, errors) is written as one buffer, status line, headers and body, straight to the
transport. Streamed bodies are written chunk by chunk, waiting while the client reads slower
than the upstream sends.
"""

from __future__ import annotations

import logging
from email.utils import formatdate
from http import HTTPStatus
from time import time

from multidict import CIMultiDict

from gateway.errors import UpstreamError
from gateway.http.headers import message_head
from gateway.http.incoming import Incoming
from gateway.http.messages import Response

log = logging.getLogger("gateway.respond")

_REASONS = {status.value: status.phrase for status in HTTPStatus}
_STATUS_LINES: dict[tuple[str, int], str] = {}
_date: list[object] = [0, ""]


def http_date() -> str:
    """The current `Date` header value, formatted once per second."""
    now = int(time())
    if now != _date[0]:
        _date[0], _date[1] = now, formatdate(now, usegmt=True)
    return _date[1]  # type: ignore[return-value]


def _status_line(version: str, status: int) -> str:
    line = _STATUS_LINES.get((version, status))
    if line is None:
        # Answer in the client's version: an HTTP/1.0 client may not know chunked encoding.
        shown = "1.0" if version == "1.0" else "1.1"
        line = f"HTTP/{shown} {status} {_REASONS.get(status, '')}\r\n"
        if len(_STATUS_LINES) < 1024:
            _STATUS_LINES[(version, status)] = line
    return line


def _bodiless(incoming: Incoming, status: int) -> bool:
    return incoming.method == "HEAD" or status in (204, 304) or status < 200


def _keep_alive(incoming: Incoming) -> bool:
    # A request body left unread (413, 408, an early answer) makes the connection unusable
    # for another request: say so, and close after the answer.
    body = incoming.body
    return incoming.keep_alive and (body is None or body.complete) and not incoming.conn.closing


def _head(incoming: Incoming, status: int, headers: CIMultiDict[str], keep_alive: bool) -> bytes:
    """Status line and headers, with Date and the Connection header the client needs."""
    if "Date" not in headers:
        headers["Date"] = http_date()
    if incoming.version == "1.0":
        if keep_alive:
            headers["Connection"] = "keep-alive"
    elif not keep_alive:
        headers["Connection"] = "close"
    return message_head(_status_line(incoming.version, status), headers)


def informational(incoming: Incoming, status: int, headers: CIMultiDict[str]) -> None:
    """Send a 1xx (102 Processing, 103 Early Hints) ahead of the final answer; never to an
    HTTP/1.0 client, which does not know them (RFC 9110 15.2)."""
    if incoming.version == "1.1" and not incoming.conn.gone:
        incoming.conn.write(message_head(_status_line("1.1", status), headers))


def complete(incoming: Incoming, response: Response) -> int:
    """Write a response with a whole body; returns the body bytes sent."""
    status = response.status
    headers = response.headers
    body = response.body
    if _bodiless(incoming, status):
        body = b""  # a HEAD answer keeps the upstream's Content-Length: it describes the GET
    else:
        headers["Content-Length"] = str(len(body))
    keep_alive = incoming.keep_alive = _keep_alive(incoming)
    head = _head(incoming, status, headers, keep_alive)
    incoming.conn.write(head + body if body else head)
    return len(body)


async def stream(incoming: Incoming, response: Response, rid: str) -> int:
    """Send a streamed body chunk by chunk, with the client's flow control.

    Declared lengths are kept; otherwise HTTP/1.1 clients get chunked encoding and HTTP/1.0
    clients a body that ends when the connection closes.
    """
    body = response.stream
    status, headers = response.status, response.headers
    conn = incoming.conn
    if body is None or conn.gone:
        if body is not None:
            body.close()  # the client went away before the answer: nothing to write
        incoming.keep_alive = False
        return 0
    keep_alive = _keep_alive(incoming)
    chunked = False
    if _bodiless(incoming, status):
        body.close()
        incoming.keep_alive = keep_alive
        conn.write(_head(incoming, status, headers, keep_alive))
        return 0
    headers.popall("Transfer-Encoding", None)
    if body.length is not None:
        headers["Content-Length"] = str(body.length)
    elif incoming.version != "1.0":
        headers["Transfer-Encoding"] = "chunked"
        chunked = True
    else:
        keep_alive = False
    incoming.keep_alive = keep_alive
    conn.write(_head(incoming, status, headers, keep_alive))
    sent = 0
    try:
        async for chunk in body:
            if conn.gone:
                raise ConnectionResetError("client went away")
            conn.write(b"%x\r\n%b\r\n" % (len(chunk), chunk) if chunked else chunk)
            sent += len(chunk)
            if conn.writing_paused:
                await conn.drain()  # the client reads slower than the upstream sends
        if chunked:
            conn.write(b"0\r\n\r\n")
    except (UpstreamError, ConnectionError) as exc:
        # Mid-body there is no status left to send: close, so the client sees the truncation.
        body.close()
        incoming.keep_alive = False
        log.info("request %s: response cut short: %s", rid, type(exc).__name__)
    return sent
