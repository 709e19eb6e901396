"""Response framing from an upstream (RFC 9112 6), with a raw-socket upstream: Transfer-Encoding
whose final coding is not chunked runs to the close, other codings are undone, Transfer-Encoding
overrides Content-Length (and the connection is not reused), unreadable framing is a 502.
Requests with such framing are still refused by the listener.
"""

from __future__ import annotations

import asyncio
import gzip
import zlib
from collections.abc import AsyncIterator, Callable

import pytest

from tests.conftest import GatewayFactory
from tests.gateway.test_proxy import BASIC

TEXT = b"the representation, " * 50
GZIPPED = gzip.compress(TEXT)


def chunked(data: bytes, size: int = 100) -> bytes:
    pieces = [data[i : i + size] for i in range(0, len(data), size)]
    return b"".join(b"%x\r\n%b\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"


class RawUpstream:
    """Answers every request with `answer` (then closes if `close`); counts connections."""

    def __init__(self) -> None:
        self.answer = b""
        self.close = True
        self.connections = 0
        self.url = ""

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                await reader.readuntil(b"\r\n\r\n")
                writer.write(self.answer)
                await writer.drain()
                if self.close:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()


@pytest.fixture
async def raw() -> AsyncIterator[RawUpstream]:
    upstream = RawUpstream()
    server = await asyncio.start_server(upstream.serve, "127.0.0.1", 0)
    upstream.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    yield upstream
    server.close()


Head = Callable[[bytes], bytes]

READ = [
    ("gzip-to-close", b"Transfer-Encoding: gzip\r\n", GZIPPED),
    ("x-gzip-to-close", b"Transfer-Encoding: x-gzip\r\n", GZIPPED),
    ("deflate-to-close", b"Transfer-Encoding: deflate\r\n", zlib.compress(TEXT)),
    ("gzip-then-chunked", b"Transfer-Encoding: gzip, chunked\r\n", chunked(GZIPPED)),
    ("gzip-then-chunked-two-lines", b"Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n",
     chunked(GZIPPED)),
    ("te-gzip-overrides-length", b"Content-Length: 5\r\nTransfer-Encoding: gzip\r\n", GZIPPED),
    ("te-chunked-overrides-length", b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
     chunked(TEXT)),
    ("length-after-te-chunked", b"Content-Length: 99999\r\nTransfer-Encoding: chunked\r\n",
     chunked(TEXT)),
]  # fmt: skip


@pytest.mark.parametrize(("head", "body"), [c[1:] for c in READ], ids=[c[0] for c in READ])
async def test_response_framing_is_read(
    head: bytes, body: bytes, raw: RawUpstream, make_gateway: GatewayFactory
) -> None:
    raw.answer = b"HTTP/1.1 200 OK\r\n" + head + b"Content-Type: text/plain\r\n\r\n" + body
    gw = await make_gateway(BASIC.replace("UPSTREAM_URL", raw.url))
    for _ in range(2):
        async with gw.request("GET", "/x") as response:
            assert response.status == 200
            assert await response.read() == TEXT
            # The transfer codings are undone: what the client gets is framed by the gateway
            # (chunked, or the length of a body that had all arrived), never by the upstream.
            assert response.headers.get("Transfer-Encoding", "chunked") == "chunked"
            assert response.headers.get("Content-Length", str(len(TEXT))) == str(len(TEXT))
    assert raw.connections == 2


async def test_te_and_length_never_reuse_the_connection(
    raw: RawUpstream, make_gateway: GatewayFactory
) -> None:
    # The upstream would keep the connection; bytes after such a message cannot be trusted
    # (RFC 9112 6.3: request smuggling, response splitting), so the gateway does not.
    raw.close = False
    raw.answer = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n"
        + chunked(TEXT)
    )
    gw = await make_gateway(BASIC.replace("UPSTREAM_URL", raw.url))
    for _ in range(2):
        async with gw.request("GET", "/x") as response:
            assert await response.read() == TEXT
    assert raw.connections == 2
    raw.answer = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked(TEXT)
    for _ in range(2):
        async with gw.request("GET", "/x") as response:
            assert await response.read() == TEXT
    assert raw.connections == 3  # plain chunked: one kept-alive connection serves both


UNREADABLE = [
    ("unknown-coding", b"Transfer-Encoding: br\r\n\r\nxxxx"),
    ("chunked-not-last", b"Transfer-Encoding: chunked, gzip\r\n\r\n" + chunked(GZIPPED)),
    ("two-lengths", b"Content-Length: 3\r\nContent-Length: 4\r\n\r\nabcd"),
    ("bad-length", b"Content-Length: 3, 4\r\n\r\nabcd"),
]


@pytest.mark.parametrize("answer", [c[1] for c in UNREADABLE], ids=[c[0] for c in UNREADABLE])
async def test_unreadable_framing_is_a_502(
    answer: bytes, raw: RawUpstream, make_gateway: GatewayFactory
) -> None:
    raw.answer = b"HTTP/1.1 200 OK\r\n" + answer
    gw = await make_gateway(BASIC.replace("UPSTREAM_URL", raw.url))
    async with gw.request("GET", "/x") as response:
        assert response.status == 502


async def test_a_coding_cut_short_cuts_the_answer(
    raw: RawUpstream, make_gateway: GatewayFactory
) -> None:
    raw.answer = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n" + GZIPPED[:-8]
    gw = await make_gateway(BASIC.replace("UPSTREAM_URL", raw.url))
    host, port = gw.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n")
    data = await reader.read()  # the gateway closes: the client sees the truncation
    assert data.startswith(b"HTTP/1.1 200")
    assert not data.endswith(b"0\r\n\r\n")
    writer.close()


REFUSED = [
    ("gzip-final", b"Transfer-Encoding: gzip\r\n\r\nabc", 400),
    ("chunked-then-length", b"Transfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n",
     400),
    ("length-then-chunked", b"Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
     400),
]  # fmt: skip


@pytest.mark.parametrize(("head", "status"), [c[1:] for c in REFUSED], ids=[c[0] for c in REFUSED])
async def test_requests_with_such_framing_are_refused(
    head: bytes, status: int, make_gateway: GatewayFactory
) -> None:
    gw = await make_gateway(BASIC)
    host, port = gw.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(b"POST /x HTTP/1.1\r\nHost: x\r\n" + head)
    data = await reader.read()  # answered, then closed
    assert data.startswith(b"HTTP/1.1 %d" % status)
    assert b"Connection: close" in data
    writer.close()
