"""The public listener on a raw socket: pipelining, HTTP/1.0, framing, idle timeouts, upgrades,
shutdown."""

from __future__ import annotations

import asyncio
import json
import os

import httptools
import pytest
from aiohttp import web

from tests.conftest import GatewayFactory
from tests.support.polling import eventually
from tests.support.upstream import Upstream

CONFIG = """
client: {keepalive_timeout: 300ms, header_timeout: 2s}
upstreams:
  backend: {targets: [UPSTREAM_URL], timeouts: {connect: 1s, read: 2s}}
routes:
  - {name: ws, match: {path: /ws}, upstream: backend, websocket: true}
  - {name: all, match: {path: /}, upstream: backend}
"""


class Answers:
    """Every response read off one connection, in order."""

    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.done: list[tuple[int, dict[str, str], bytes]] = []
        self.version = ""
        self._headers: dict[str, str] = {}
        self._body = b""

    def on_message_begin(self) -> None:
        self._headers, self._body = {}, b""

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.decode()] = value.decode()

    def on_headers_complete(self) -> None:
        self.version = self.parser.get_http_version()

    def on_body(self, body: bytes) -> None:
        self._body += body

    def on_message_complete(self) -> None:
        self.done.append((self.parser.get_status_code(), self._headers, self._body))


async def connect(url: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = url.removeprefix("http://").split(":")
    return await asyncio.open_connection(host, int(port))


async def read_answers(reader: asyncio.StreamReader, count: int) -> Answers:
    answers = Answers()
    while len(answers.done) < count:
        data = await asyncio.wait_for(reader.read(65536), 5)
        if not data:
            break
        answers.parser.feed_data(data)
    return answers


async def test_pipelined_requests_are_answered_in_order(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(CONFIG)
    reader, writer = await connect(gw.url)
    # One write, three requests; the first is the slowest to answer upstream.
    writer.write(
        b"GET /slow/0.2 HTTP/1.1\r\nHost: x\r\n\r\n"
        b"POST /second HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
        b"GET /third HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    answers = await read_answers(reader, 3)
    writer.close()
    assert [status for status, _, _ in answers.done] == [200, 200, 200]
    first, second, third = (json.loads(body) for _, _, body in answers.done)
    assert first == {"slept": "0.2"}
    assert (second["path"], second["body_bytes"]) == ("/second", 5)
    assert third["path"] == "/third"


@pytest.mark.parametrize(
    ("good", "apart"),
    [
        ([b"/first"], False),
        ([b"/first", b"/second"], False),  # two heads taken off one read before the refusal
        # The bad line comes while the first is being answered, which outlasts the head
        # timeout: the unfinished bad head must not cut the answer off.
        ([b"/slow/0.6"], True),
    ],
    ids=["one", "two", "while-answering"],
)
async def test_a_bad_message_pipelined_after_good_ones_is_refused_after_their_answers(
    make_gateway: GatewayFactory, upstream: Upstream, good: list[bytes], apart: bool
) -> None:
    gw = await make_gateway(CONFIG.replace("header_timeout: 2s", "header_timeout: 200ms"))
    reader, writer = await connect(gw.url)
    heads = b"".join(b"GET " + path + b" HTTP/1.1\r\nHost: x\r\n\r\n" for path in good)
    if apart:
        writer.write(heads)
        await eventually(lambda: len(upstream.requests) == len(good), "the upstream's request")
        writer.write(b"BAD\x00LINE\r\n\r\n")
    else:
        writer.write(heads + b"BAD\x00LINE\r\n\r\n")  # one write
    data = await asyncio.wait_for(reader.read(), 5)  # every answer, then EOF
    writer.close()
    answers = Answers()
    answers.parser.feed_data(data)
    assert [r["path"] for r in upstream.requests] == [p.decode() for p in good]
    assert [status for status, _, _ in answers.done] == [200] * len(good) + [400]
    for path, (_, _, body) in zip(good, answers.done, strict=False):
        payload = json.loads(body)  # the echo, or /slow's {"slept": ...}
        assert payload.get("path", f"/slow/{payload.get('slept')}") == path.decode()
    _, headers, body = answers.done[-1]
    assert headers["Connection"] == "close"
    assert json.loads(body)["error"] == "bad_request"


@pytest.mark.parametrize("spelled", [b"010", b"0000000010"])
async def test_the_upstream_gets_the_gateways_own_content_length(
    make_gateway: GatewayFactory, upstream: Upstream, spelled: bytes
) -> None:
    # A parser reading a leading zero as octal would frame 010 as 8 bytes.
    gw = await make_gateway(CONFIG)
    reader, writer = await connect(gw.url)
    writer.write(
        b"POST /len HTTP/1.1\r\nHost: x\r\nContent-Length: " + spelled + b"\r\n\r\n0123456789"
        b"GET /next HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    answers = await read_answers(reader, 2)
    writer.close()
    assert [status for status, _, _ in answers.done] == [200, 200]
    seen = json.loads(answers.done[0][2])
    assert [v for k, v in seen["header_list"] if k.lower() == "content-length"] == ["10"]
    assert seen["body_bytes"] == 10
    assert json.loads(answers.done[1][2])["path"] == "/next"


async def test_http_1_0_with_a_chunked_body_is_answered_then_closed(
    make_gateway: GatewayFactory, upstream: Upstream
) -> None:
    # RFC 9112 6.1: Transfer-Encoding in HTTP/1.0 is faulty framing; close after the answer,
    # whatever Connection says.
    gw = await make_gateway(CONFIG)
    reader, writer = await connect(gw.url)
    writer.write(
        b"POST /old HTTP/1.0\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n0\r\n\r\n"
    )
    data = await asyncio.wait_for(reader.read(), 5)  # one answer, then EOF
    writer.close()
    answers = Answers()
    answers.parser.feed_data(data)
    ((status, headers, body),) = answers.done
    assert status == 200
    assert "keep-alive" not in headers.get("Connection", "").lower()
    assert json.loads(body)["body_bytes"] == 5
    assert [r["path"] for r in upstream.requests] == ["/old"]


async def test_http_1_0_gets_1_0_answers_and_keep_alive_only_when_asked(
    make_gateway: GatewayFactory,
) -> None:
    gw = await make_gateway(CONFIG)
    reader, writer = await connect(gw.url)
    writer.write(b"GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    answers = await read_answers(reader, 1)
    assert answers.version == "1.0"
    assert answers.done[0][1]["Connection"] == "keep-alive"
    writer.write(b"GET /b HTTP/1.0\r\n\r\n")
    rest = await asyncio.wait_for(reader.read(), 5)  # answered, then closed by the gateway
    writer.close()
    assert rest.startswith(b"HTTP/1.0 200 ")
    assert b"keep-alive" not in rest.split(b"\r\n\r\n")[0].lower()


async def test_an_idle_keep_alive_connection_is_closed(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(CONFIG)
    reader, writer = await connect(gw.url)
    writer.write(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
    await read_answers(reader, 1)
    loop = asyncio.get_running_loop()
    idle_from = loop.time()
    assert await asyncio.wait_for(reader.read(), 5) == b""  # EOF: the gateway closed it
    writer.close()
    assert 0.25 < loop.time() - idle_from < 2.0  # keepalive_timeout 300ms, swept in steps


async def test_an_upgrade_request_with_a_body_is_refused(
    make_gateway: GatewayFactory, upstream: Upstream
) -> None:
    # llhttp would take the body for bytes of the new protocol: the gateway never guesses.
    gw = await make_gateway(CONFIG)
    reader, writer = await connect(gw.url)
    writer.write(
        b"POST /x HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: foo\r\n"
        b"Content-Length: 26\r\n\r\nGET /smuggled HTTP/1.1\r\n\r\n"
    )
    answers = await read_answers(reader, 1)
    writer.close()
    status, headers, body = answers.done[0]
    assert (status, json.loads(body)["error"]) == (400, "bad_request")
    assert headers["Connection"] == "close"
    assert not upstream.hits


async def test_an_upgrade_the_route_does_not_take_is_answered_over_http_then_closed(
    make_gateway: GatewayFactory, upstream: Upstream
) -> None:
    gw = await make_gateway(CONFIG)
    reader, writer = await connect(gw.url)
    writer.write(
        b"GET /h2 HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\n"
        b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n"
    )
    data = await asyncio.wait_for(reader.read(), 5)  # one answer, then EOF
    writer.close()
    answers = Answers()
    answers.parser.feed_data(data)
    status, _, body = answers.done[0]
    assert status == 200
    seen = json.loads(body)["headers"]
    assert "Upgrade" not in seen
    assert "HTTP2-Settings" not in seen
    assert upstream.hits["/h2"] == 1


def _frame(text: bytes) -> bytes:
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(text))
    return bytes([0x81, 0x80 | len(text)]) + mask + masked


async def test_websocket_bytes_sent_before_the_101_reach_the_upstream(
    make_gateway: GatewayFactory,
) -> None:
    gw = await make_gateway(CONFIG)
    reader, writer = await connect(gw.url)
    writer.write(
        b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
        b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        b"Sec-WebSocket-Protocol: chat\r\n\r\n" + _frame(b"early")
    )
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 101 ")
    assert b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" in head  # the upstream's own accept key
    frame = await asyncio.wait_for(reader.readexactly(2 + len(b"echo: early")), 5)
    writer.close()
    assert frame[2:] == b"echo: early"


@pytest.mark.parametrize("busy", [False, True])
async def test_shutdown_closes_idle_connections_and_lets_answers_finish(
    make_gateway: GatewayFactory, upstream: Upstream, busy: bool
) -> None:
    arrived, release = asyncio.Event(), asyncio.Event()

    async def held(request: web.Request) -> web.Response:
        arrived.set()
        await release.wait()
        return web.json_response({"held": True})

    upstream.route("/held", held)
    gw = await make_gateway(CONFIG)
    reader, writer = await connect(gw.url)
    if busy:
        writer.write(b"GET /held HTTP/1.1\r\nHost: x\r\n\r\n")
        await asyncio.wait_for(arrived.wait(), 5)
    else:
        writer.write(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
        await read_answers(reader, 1)
    shutdown = asyncio.ensure_future(gw._server.shutdown(5))
    if busy:
        await asyncio.sleep(0)  # shutdown has begun: the busy connection must stay open
        assert not shutdown.done()
        release.set()
    data = await asyncio.wait_for(reader.read(), 5)  # EOF comes, after any answer due
    await asyncio.wait_for(shutdown, 5)
    writer.close()
    if busy:
        assert data.startswith(b"HTTP/1.1 200 ")
        assert b"Connection: close" in data
    else:
        assert data == b""


@pytest.mark.parametrize("target", [b"/x", b"example.com:443"])
async def test_connect_is_answered_then_the_connection_closes(
    make_gateway: GatewayFactory, upstream: Upstream, target: bytes
) -> None:
    # What follows a CONNECT head is tunnel bytes to the parser: never read as requests.
    gw = await make_gateway(CONFIG)
    reader, writer = await connect(gw.url)
    writer.write(
        b"CONNECT " + target + b" HTTP/1.1\r\nHost: x\r\n\r\nGET /smuggled HTTP/1.1\r\n\r\n"
    )
    data = await asyncio.wait_for(reader.read(), 5)  # one answer, then EOF
    writer.close()
    assert data.split(b" ", 2)[1] in (b"400", b"405")
    assert data.count(b"HTTP/1.1 ") == 1
    assert not upstream.hits


async def test_a_client_that_does_not_read_gets_no_more_answers_buffered(
    make_gateway: GatewayFactory,
) -> None:
    gw = await make_gateway(
        CONFIG.replace(
            "routes:\n",
            "routes:\n  - name: big\n    match: {path: /bytes}\n    upstream: backend\n"
            "    policies: [{cache: {ttl: 60s}}]\n",
        )
    )
    size = 900_000  # under the cache's max_body: answered whole, from the store
    path = f"/bytes/{size}?length=1"
    for expected in ("MISS", "HIT"):
        async with gw.request("GET", path) as response:
            assert response.headers["X-Cache"] == expected
            assert len(await response.read()) == size
    reader, writer = await connect(gw.url)
    count = 30
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode() * count)
    port = writer.get_extra_info("sockname")[1]
    (conn,) = [
        c
        for c in gw._server.connections
        if c.transport is not None and c.transport.get_extra_info("peername")[1] == port
    ]
    await eventually(lambda: conn.writing_paused, "the gateway pausing its writes")
    answered = [line for line in gw.access_lines() if line["route"] == "big"]
    # The two above, then what the kernel's socket buffers took (a few MB on loopback), and
    # one more waiting in the gateway's own buffer: never all thirty.
    assert len(answered) <= 2 + 10
    assert conn.transport is not None
    assert conn.transport.get_write_buffer_size() < 2 * size
    answers = await read_answers(reader, count)  # reading lets every answer through
    writer.close()
    assert [(status, len(body)) for status, _, body in answers.done] == [(200, size)] * count
