"""What clients can send that must be refused: oversized, ambiguous or trickled request heads."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time

import pytest
from aiohttp import web

from tests.conftest import GatewayFactory
from tests.support.upstream import Upstream

CONFIG = """
client: {header_timeout: 300ms, body_timeout: 300ms}
max_request_body: 10MiB
upstreams:
  backend: {targets: [UPSTREAM_URL]}
routes:
  - {name: all, match: {path: /}, upstream: backend}
"""


async def exchange(url: str, raw: bytes) -> tuple[int, dict[str, str], bytes]:
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(raw)
    await writer.drain()
    data = await reader.read()  # every case here ends with the gateway closing
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, body


@pytest.mark.parametrize(
    ("raw", "status", "code"),
    [
        (
            b"GET / HTTP/1.1\r\nHost: x\r\nCookie: sid=SECRET" + b"a" * 70_000 + b"\r\n\r\n",
            431,
            "request_header_fields_too_large",
        ),
        (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414, "uri_too_long"),
        (
            b"GET / HTTP/1.1\r\nHost: x\r\n"
            + b"".join(b"X-%d: 1\r\n" % i for i in range(150))
            + b"\r\n",
            431,
            "request_header_fields_too_large",
        ),
        (
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            400,
            "bad_request",
        ),
        (
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
            400,
            "bad_request",
        ),
        (
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked, identity\r\n\r\n",
            400,
            "bad_request",
        ),
        (
            # RFC 9112 6.1: a transfer coding the gateway does not forward is 501, never sent
            # on as a plain chunked body of gzip bytes.
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
            b"3\r\n\x1f\x8b\x08\r\n0\r\n\r\n",
            501,
            "not_implemented",
        ),
        (
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n3\r\n\x1f\x8b\x08\r\n0\r\n\r\n",
            501,
            "not_implemented",
        ),
        (b"GET / HTTP/1.1\r\nHost: x\r\nX-Secret: a\x00SECRET\r\n\r\n", 400, "bad_request"),
        (b"GET / HTTP/1.1\r\nHost: x\r\n Folded: SECRET\r\n\r\n", 400, "bad_request"),
        (b"GET / HTTP/1.1\r\nHost: x\r\nHost: SECRET\r\n\r\n", 400, "bad_request"),
        (
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: a/b\r\nContent-Type: SECRET/x\r\n"
            b"Content-Length: 2\r\n\r\n{}",
            400,
            "bad_request",
        ),
        # RFC 9112 3.2: an HTTP/1.1 request without Host, or with an empty or invalid one.
        (b"GET / HTTP/1.1\r\nX-Secret: SECRET\r\n\r\n", 400, "bad_request"),
        (b"GET / HTTP/1.1\r\nHost:\r\nX-Secret: SECRET\r\n\r\n", 400, "bad_request"),
        (b"GET / HTTP/1.1\r\nHost: a/SECRET\r\n\r\n", 400, "bad_request"),
        (b"GET / HTTP/1.1\r\nHost: user@SECRET\r\n\r\n", 400, "bad_request"),
        (b"GET / HTTP/1.0\r\nHost: a b SECRET\r\n\r\n", 400, "bad_request"),
    ],
    ids=[
        "huge-header",
        "huge-uri",
        "too-many-headers",
        "cl-and-te",
        "two-lengths",
        "te-not-chunked-last",
        "te-gzip-chunked",
        "te-gzip-chunked-two-lines",
        "nul-in-header",
        "obs-fold",
        "two-hosts",
        "two-content-types",
        "no-host",
        "empty-host",
        "host-with-path",
        "host-with-user",
        "http-1.0-invalid-host",
    ],
)
async def test_malformed_heads_get_json_errors_without_echo(
    make_gateway: GatewayFactory, upstream: Upstream, raw: bytes, status: int, code: str
) -> None:
    gw = await make_gateway(CONFIG)
    got, headers, body = await exchange(gw.url, raw)
    assert got == status
    assert headers["Content-Type"].startswith("application/json")
    payload = json.loads(body)
    assert (payload["error"], len(payload["request_id"])) == (code, 32)
    assert headers["Connection"] == "close"
    assert b"SECRET" not in body
    assert not upstream.hits  # nothing ambiguous is ever forwarded


async def test_a_trickled_head_is_cut_off(make_gateway: GatewayFactory, upstream: Upstream) -> None:
    gw = await make_gateway(CONFIG)
    host, port = gw.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    started = time.monotonic()
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n")
    await writer.drain()
    closed = False
    for i in range(100):  # one header line every 100 ms, never finishing the head
        try:
            writer.write(b"X-%d: y\r\n" % i)
            await writer.drain()
            closed = await asyncio.wait_for(reader.read(1), 0.1) == b""
        except TimeoutError:
            continue
        except ConnectionError:
            closed = True
        if closed:
            break
    assert closed
    assert time.monotonic() - started < 1.5
    writer.close()
    assert not upstream.hits


async def test_keepalive_connection_serves_many_requests_despite_the_head_timer(
    make_gateway: GatewayFactory,
) -> None:
    gw = await make_gateway(CONFIG)
    for _ in range(3):
        async with gw.request("GET", "/x") as response:
            assert response.status == 200
        await asyncio.sleep(0.2)  # idle keep-alive time between requests is not head time


async def test_a_stalled_upload_times_out(make_gateway: GatewayFactory, upstream: Upstream) -> None:
    gw = await make_gateway(CONFIG)
    host, port = gw.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\npartial")
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 408")
    assert b"Connection: close" in head
    writer.close()


async def test_a_slow_but_steady_upload_outlasts_the_head_timeout(
    make_gateway: GatewayFactory, upstream: Upstream
) -> None:
    # Body bytes keep coming (each within body_timeout) for longer than header_timeout: the
    # head timer must not fire during the body.
    gw = await make_gateway(CONFIG)
    host, port = gw.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n")
    for _ in range(10):
        await asyncio.sleep(0.1)
        writer.write(b"x")
        await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 200")
    writer.close()


async def test_http_1_0_without_host_is_served(
    make_gateway: GatewayFactory, upstream: Upstream
) -> None:
    gw = await make_gateway(CONFIG)
    got, _, _ = await exchange(gw.url, b"GET /echo HTTP/1.0\r\n\r\n")
    assert got == 200
    assert upstream.hits


async def test_a_client_that_does_not_read_is_cut_off_and_the_upstream_released(
    make_gateway: GatewayFactory, upstream: Upstream
) -> None:
    released = asyncio.Event()

    async def endless(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        try:
            while True:
                await response.write(b"x" * 65536)
        finally:
            released.set()  # the gateway closed its upstream connection (write failed or
            # the handler was cancelled): nothing else ends this loop

    upstream.route("/endless", endless)
    gw = await make_gateway(CONFIG.replace("body_timeout: 300ms", "send_timeout: 500ms"))
    host, port = gw.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(b"GET /endless HTTP/1.1\r\nHost: x\r\n\r\n")
    started = time.monotonic()
    await asyncio.wait_for(released.wait(), 10)  # the client reads nothing meanwhile
    assert time.monotonic() - started >= 0.5
    with contextlib.suppress(ConnectionError):
        while await reader.read(1 << 20):
            pass  # what was buffered before the cut, then the end
    writer.close()
    lines = [line for line in gw.access_lines() if line["path"] == "/endless"]
    assert lines[0]["aborted"] == "send_timeout"
