"""Published request-smuggling (desync) vectors: each is refused, or forwarded so that the
gateway and a strict upstream agree on where every message ends (issue 20, item 5).

The upstream parses strictly (llhttp) and records each message; the client counts the answers
the upstream gave. Agreement means: the upstream parsed every byte it got, it answered exactly
the messages the gateway forwarded, and no request hidden in a body (`/smuggled`) reached it
unless the gateway itself answered it as a request of its own.
"""

from __future__ import annotations

import asyncio

import httptools
import pytest

from tests.reliability.raw_upstream import RawUpstream
from tests.support.harness import start_gateway

SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"

# (id, raw request bytes, outcome): "refused" (a gateway 4xx/5xx, nothing forwarded) or the
# bodies the upstream must receive, in order.
VECTORS: list[tuple[str, bytes, str | list[bytes]]] = [
    # Transfer-Encoding obfuscations
    (
        "te-trailing-space",
        b"Transfer-Encoding: chunked \r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        [b"hello"],
    ),
    ("te-leading-tab", b"Transfer-Encoding:\tchunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", [b"hello"]),
    ("te-case", b"Transfer-Encoding: CHUNKED\r\n\r\n5\r\nhello\r\n0\r\n\r\n", [b"hello"]),
    (
        "te-space-before-colon",
        b"Transfer-Encoding : chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n" + SMUGGLED,
        "refused",
    ),
    (
        "te-vertical-tab",
        b"Transfer-Encoding: \x0bchunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n" + SMUGGLED,
        "refused",
    ),
    (
        "te-duplicate-lines",
        b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        "refused",
    ),
    (
        "te-chunked-twice",
        b"Transfer-Encoding: chunked, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        "refused",
    ),
    (
        "te-xchunked",
        b"Transfer-Encoding: xchunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n" + SMUGGLED,
        "refused",
    ),
    (
        "te-identity",
        b"Transfer-Encoding: identity\r\nContent-Length: 5\r\n\r\nhello" + SMUGGLED,
        "refused",
    ),
    (
        "te-and-cl",
        b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        "refused",
    ),
    (
        "cl-and-te-obfuscated",
        b"Content-Length: 4\r\nTransfer-Encoding: chunked \r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        "refused",
    ),
    # Content-Length with a sign, leading zeros or a list
    ("cl-plus", b"Content-Length: +5\r\n\r\nhello" + SMUGGLED, "refused"),
    ("cl-minus", b"Content-Length: -5\r\n\r\nhello" + SMUGGLED, "refused"),
    ("cl-leading-zeros", b"Content-Length: 005\r\n\r\nhello", [b"hello"]),
    ("cl-list-same", b"Content-Length: 5, 5\r\n\r\nhello" + SMUGGLED, "refused"),
    ("cl-list-different", b"Content-Length: 5, 50\r\n\r\nhello" + SMUGGLED, "refused"),
    ("cl-two-lines", b"Content-Length: 5\r\nContent-Length: 5\r\n\r\nhello" + SMUGGLED, "refused"),
    ("cl-hex", b"Content-Length: 0x5\r\n\r\nhello" + SMUGGLED, "refused"),
    ("cl-space-inside", b"Content-Length: 5 0\r\n\r\nhello" + SMUGGLED, "refused"),
    # Bare LF, obs-fold, NUL in values
    ("bare-lf-header", b"X-A: 1\nContent-Length: 5\r\n\r\nhello" + SMUGGLED, "refused"),
    (
        "obs-fold-te",
        b"X-A: 1\r\n Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\nhello",
        "refused",
    ),
    ("nul-in-value", b"X-A: a\x00b\r\nContent-Length: 5\r\n\r\nhello", "refused"),
    ("cr-in-value", b"X-A: a\rb\r\nContent-Length: 5\r\n\r\nhello", "refused"),
    # Chunk-extension and chunk-size abuse
    (
        "chunk-ext",
        b"Transfer-Encoding: chunked\r\n\r\n5;name=value\r\nhello\r\n0\r\n\r\n",
        [b"hello"],
    ),
    (
        "chunk-ext-quoted-crlf",
        b'Transfer-Encoding: chunked\r\n\r\n5;a="x\r\nhello\r\n0\r\n\r\n' + SMUGGLED,
        "refused",
    ),
    (
        "chunk-ext-bare-lf",
        b"Transfer-Encoding: chunked\r\n\r\n5;a\nhello\r\n0\r\n\r\n" + SMUGGLED,
        "refused",
    ),
    (
        "chunk-size-hex-prefix",
        b"Transfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n" + SMUGGLED,
        "refused",
    ),
    (
        "chunk-size-overflow",
        b"Transfer-Encoding: chunked\r\n\r\nffffffffffffffffff1\r\nhello\r\n0\r\n\r\n" + SMUGGLED,
        "refused",
    ),
    (
        "chunk-data-too-long",
        b"Transfer-Encoding: chunked\r\n\r\n3\r\nhello\r\n0\r\n\r\n" + SMUGGLED,
        "refused",
    ),
    (
        "chunk-size-space",
        b"Transfer-Encoding: chunked\r\n\r\n5 \r\nhello\r\n0\r\n\r\n" + SMUGGLED,
        "refused",
    ),
]

CONFIG = """
client: {keepalive_timeout: 300ms, header_timeout: 1s, body_timeout: 1s}
upstreams:
  backend: {targets: ["URL"]}
routes:
  - {name: all, match: {path: /}, upstream: backend}
"""


class _Answers:
    def __init__(self) -> None:
        self.statuses: list[tuple[int, bool]] = []
        self._upstream = False
        self.parser = httptools.HttpResponseParser(self)

    def on_message_begin(self) -> None:
        self._upstream = False

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == b"x-raw-upstream":
            self._upstream = True

    def on_message_complete(self) -> None:
        self.statuses.append((self.parser.get_status_code(), self._upstream))


async def _send(url: str, raw: bytes) -> list[tuple[int, bool]]:
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(raw)
    answers = _Answers()
    try:
        while data := await asyncio.wait_for(reader.read(65536), 5):
            answers.parser.feed_data(data)
    except (ConnectionError, httptools.HttpParserError):
        pass
    writer.close()
    return answers.statuses


@pytest.mark.parametrize(("raw", "outcome"), [v[1:] for v in VECTORS], ids=[v[0] for v in VECTORS])
async def test_a_desync_vector_is_refused_or_framed_alike_on_both_sides(
    raw: bytes, outcome: str | list[bytes]
) -> None:
    async with RawUpstream() as upstream:
        gw = await start_gateway(CONFIG.replace("URL", upstream.url))
        try:
            statuses = await _send(gw.url, b"POST /in HTTP/1.1\r\nHost: x\r\n" + raw)
        finally:
            await gw.close()
    assert upstream.errors == []  # the upstream parsed every byte the gateway sent it
    answered_by_upstream = [status for status, by_upstream in statuses if by_upstream]
    assert len(answered_by_upstream) == len(upstream.received)
    forwarded = [(m.method, m.path, bytes(m.body)) for m in upstream.received]
    if outcome == "refused":
        assert statuses, "no answer"
        assert statuses[0][0] >= 400, statuses
        assert not statuses[0][1], statuses  # the gateway's own answer
        assert forwarded == []
    else:
        assert [body for _, path, body in forwarded if path == "/in"] == outcome
        assert all(path == "/in" for _, path, _ in forwarded), forwarded
