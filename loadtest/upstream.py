"""A deliberately fast upstream for load tests and benchmarks.

    python -m loadtest.upstream --port 9000

A raw `asyncio.Protocol` on uvloop with canned responses, so the upstream is never what a
benchmark measures (it serves well over 100k requests/s per core with wrk). HTTP/1.1 keep-alive
and pipelining: every complete request in a read is answered, in order, with one write.

Paths (query strings are ignored; a trailing `/anything` is allowed so load tests can spread
requests over many cache keys):
- `/fast`       200, `Hello, World!` (13 bytes, text/plain)
- `/cacheable`  200, `Cache-Control: public, max-age=60`, an `ETag` (304 on `If-None-Match`)
- `/json`       200, a small JSON object
- `/whoami`     200, JSON echo of the identity the upstream received: `X-User-Id`,
                `X-User-Role`, `Authorization`, `Cookie` (null when absent)
- `/delivered`  200; counts the request's `Idempotency-Key` (the queue's deliveries)
- `/deliveries` 200, JSON `{key: times received}` of every `/delivered` request so far
- anything else 404

Request bodies are read by `Content-Length` and dropped; a chunked request body gets 501
(load tests never send one), a head over 64 KiB gets 431.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
from collections import Counter

_MAX_HEAD = 64 * 1024
_FAST_BODY = b"Hello, World!"
_JSON_BODY = b'{"id":42,"name":"widget","price":9.99,"tags":["a","b"]}'
_CACHEABLE_BODY = b"cacheable body"
_ETAG = b'"v1"'


def _response(status: bytes, headers: list[bytes], body: bytes, head_only: bool = False) -> bytes:
    lines = [b"HTTP/1.1 " + status, *headers, b"Content-Length: " + str(len(body)).encode()]
    return b"\r\n".join(lines) + b"\r\n\r\n" + (b"" if head_only else body)


def _canned(status: bytes, headers: list[bytes], body: bytes) -> tuple[bytes, bytes]:
    """(GET answer, HEAD answer), built once at import: requests only pick one."""
    return _response(status, headers, body), _response(status, headers, body, head_only=True)


_TEXT = [b"Content-Type: text/plain"]
_JSON = [b"Content-Type: application/json"]
_CACHE = [b"Content-Type: text/plain", b"Cache-Control: public, max-age=60", b"ETag: " + _ETAG]
_CANNED: dict[bytes, tuple[bytes, bytes]] = {
    b"fast": _canned(b"200 OK", _TEXT, _FAST_BODY),
    b"json": _canned(b"200 OK", _JSON, _JSON_BODY),
    b"cacheable": _canned(b"200 OK", _CACHE, _CACHEABLE_BODY),
}
_NOT_MODIFIED = b"HTTP/1.1 304 Not Modified\r\nETag: " + _ETAG + b"\r\n\r\n"
_NOT_FOUND = _canned(b"404 Not Found", _TEXT, b"not found")
_BAD_REQUEST = _response(b"400 Bad Request", [*_TEXT, b"Connection: close"], b"bad request")
_TOO_LARGE = _response(b"431 Too Large", [*_TEXT, b"Connection: close"], b"head too large")
_CHUNKED = _response(b"501 Not Implemented", [*_TEXT, b"Connection: close"], b"no chunked")


def _header(head: bytes, lower: bytes, name: bytes) -> bytes | None:
    """The value of header `name` (lowercase, with colon) in a head, or None."""
    index = lower.find(b"\r\n" + name)
    if index < 0:
        return None
    start = index + 2 + len(name)
    end = head.find(b"\r\n", start)
    return head[start : end if end >= 0 else len(head)].strip()


def _whoami(head: bytes, lower: bytes, head_only: bool) -> bytes:
    # The credentials are echoed too, so a load test can prove they were not forwarded.
    fields = {"user_id": b"x-user-id:", "role": b"x-user-role:"}
    fields |= {"authorization": b"authorization:", "cookie": b"cookie:"}
    payload = {}
    for key, name in fields.items():
        value = _header(head, lower, name)
        payload[key] = value.decode("latin-1") if value is not None else None
    body = json.dumps(payload, separators=(",", ":")).encode()
    return _response(b"200 OK", _JSON, body, head_only)


_DELIVERED = _canned(b"200 OK", _TEXT, b"delivered")


class FastHTTP(asyncio.Protocol):
    """One client connection: parse complete requests from the buffer, answer each."""

    __slots__ = ("buffer", "deliveries", "paused", "transport")

    def __init__(self, deliveries: Counter[str] | None = None) -> None:
        self.deliveries: Counter[str] = deliveries if deliveries is not None else Counter()
        """Idempotency-Key -> times received, shared by the server's connections."""
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None

    # A client that pipelines without reading: stop reading until our writes drain.
    def pause_writing(self) -> None:
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.transport is not None:
            self.transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        transport = self.transport
        if transport is None:
            return
        buf = self.buffer + data if self.buffer else data
        out: list[bytes] = []
        start = 0
        close = False
        while True:
            end = buf.find(b"\r\n\r\n", start)
            if end < 0:
                if len(buf) - start > _MAX_HEAD:
                    out.append(_TOO_LARGE)
                    close = True
                break
            head = buf[start:end]
            line_end = head.find(b"\r\n")
            request_line = head if line_end < 0 else head[:line_end]
            parts = request_line.split(b" ")
            if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
                out.append(_BAD_REQUEST)
                close = True
                break
            method, target, version = parts
            # Lowercased once so header lookups are plain substring searches.
            lower = head.lower()
            body_start = end + 4
            if b"\r\ntransfer-encoding:" in lower:
                out.append(_CHUNKED)
                close = True
                break
            length = 0
            if b"\r\ncontent-length:" in lower:
                raw = _header(head, lower, b"content-length:")
                if raw is None or not raw.isdigit():
                    out.append(_BAD_REQUEST)
                    close = True
                    break
                length = int(raw)
            if len(buf) < body_start + length:
                break  # the body is still on its way
            start = body_start + length
            out.append(self._answer(method, target, head, lower))
            if b"\r\nconnection:" in lower:
                value = (_header(head, lower, b"connection:") or b"").lower()
                close = value == b"close" or (version == b"HTTP/1.0" and value != b"keep-alive")
            else:
                close = version == b"HTTP/1.0"
            if close:
                break
        self.buffer = b"" if close else buf[start:]
        if out:
            transport.write(out[0] if len(out) == 1 else b"".join(out))
        if close:
            transport.close()

    def _answer(self, method: bytes, target: bytes, head: bytes, lower: bytes) -> bytes:
        head_only = method == b"HEAD"
        path = target.split(b"?", 1)[0]
        first = path[1:].split(b"/", 1)[0] if path.startswith(b"/") else b""
        canned = _CANNED.get(first)
        if canned is not None:
            if first == b"cacheable" and _header(head, lower, b"if-none-match:") == _ETAG:
                return _NOT_MODIFIED
            return canned[1] if head_only else canned[0]
        if first == b"whoami":
            return _whoami(head, lower, head_only)
        if first == b"delivered":
            key = _header(head, lower, b"idempotency-key:")
            self.deliveries[(key or b"").decode("latin-1")] += 1
            return _DELIVERED[1] if head_only else _DELIVERED[0]
        if first == b"deliveries":
            body = json.dumps(self.deliveries).encode()
            return _response(b"200 OK", _JSON, body, head_only)
        return _NOT_FOUND[1] if head_only else _NOT_FOUND[0]


async def serve(host: str, port: int, reuse_port: bool = False) -> None:
    """Serve until cancelled; prints `upstream listening on http://HOST:PORT` once bound."""
    loop = asyncio.get_running_loop()
    deliveries: Counter[str] = Counter()
    server = await loop.create_server(
        lambda: FastHTTP(deliveries), host, port, backlog=4096, reuse_port=reuse_port or None
    )
    bound = server.sockets[0].getsockname()
    print(f"upstream listening on http://{bound[0]}:{bound[1]}", file=sys.stderr, flush=True)
    async with server:
        await server.serve_forever()


def run(coro: object) -> None:
    """Run on uvloop when it is installed (it is a dependency of the gateway)."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        asyncio.run(coro)  # type: ignore[arg-type]
    else:
        uvloop.run(coro)  # type: ignore[arg-type]


def main(argv: list[str] | None = None) -> None:
    """Command line: `--host`, `--port`, `--reuse-port`."""
    parser = argparse.ArgumentParser(description="A fast canned-response upstream.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--reuse-port", action="store_true", help="for several processes")
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        run(serve(args.host, args.port, args.reuse_port))


if __name__ == "__main__":
    main()
