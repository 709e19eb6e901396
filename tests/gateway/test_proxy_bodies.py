"""Bodies through the proxy: uploads, downloads, framing, encodings, bodiless answers."""

from __future__ import annotations

import asyncio
import gzip
import hashlib

import pytest
from aiohttp import web

from tests.conftest import GatewayFactory
from tests.gateway.test_proxy import BASIC
from tests.support.upstream import Upstream, pattern


async def test_five_mib_upload_with_length_arrives_intact(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(BASIC)
    body = pattern(5 * 1024 * 1024)
    async with gw.request("POST", "/upload", data=body) as response:
        seen = await response.json()
    assert seen["body_bytes"] == len(body)
    assert seen["body_sha256"] == hashlib.sha256(body).hexdigest()


async def test_expect_continue_upload(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(BASIC)
    body = pattern(2 * 1024 * 1024)
    async with gw.request("POST", "/upload", data=body, expect100=True) as response:
        seen = await response.json()
    assert seen["body_sha256"] == hashlib.sha256(body).hexdigest()
    assert "Expect" not in seen["headers"]


@pytest.mark.parametrize("declared_length", [True, False], ids=["content-length", "chunked"])
async def test_twenty_mb_download_streams_intact(
    make_gateway: GatewayFactory, declared_length: bool
) -> None:
    gw = await make_gateway(BASIC)
    size = 20 * 1000 * 1000
    query = "?length=1" if declared_length else ""
    digest = hashlib.sha256()
    received = 0
    async with gw.request("GET", f"/bytes/{size}{query}") as response:
        assert response.status == 200
        if declared_length:
            assert response.headers["Content-Length"] == str(size)
        else:
            assert response.headers.get("Transfer-Encoding") == "chunked"
        async for chunk in response.content.iter_any():
            digest.update(chunk)
            received += len(chunk)
    assert received == size
    assert digest.hexdigest() == hashlib.sha256(pattern(size)).hexdigest()


async def test_connection_is_reusable_after_a_body_buffered_past_the_high_water_mark(
    make_gateway: GatewayFactory, upstream: Upstream
) -> None:
    # Regression: reading paused for a slow client must resume when that body is complete,
    # else the next request on the pooled connection waits forever.
    sent = asyncio.Event()

    async def big(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.content_length = 2 * 1024 * 1024
        await response.prepare(request)
        await response.write(pattern(2 * 1024 * 1024))
        await response.write_eof()
        sent.set()
        return response

    upstream.route("/big", big)
    gw = await make_gateway(BASIC)
    async with gw.request("GET", "/big") as response:
        await sent.wait()  # the upstream is done while the client has not read a byte
        assert len(await response.read()) == 2 * 1024 * 1024
    async with gw.request("GET", "/echo") as response:
        assert response.status == 200


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end",
        b"HTTP/1.0 200 OK\r\n\r\nuntil the end",
    ],
    ids=["http11-close", "http10"],
)
async def test_body_delimited_by_connection_close(
    make_gateway: GatewayFactory, answer: bytes
) -> None:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(answer)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    gw = await make_gateway(BASIC.replace("UPSTREAM_URL", f"http://127.0.0.1:{port}"))
    for _ in range(2):  # and the next request gets a fresh connection
        async with gw.request("GET", "/x") as response:
            assert response.status == 200
            assert await response.read() == b"until the end"
    server.close()


async def test_header_bytes_that_are_not_utf8_pass_through_unchanged(
    make_gateway: GatewayFactory,
) -> None:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b'HTTP/1.1 200 OK\r\nETag: "caf\xe9"\r\nContent-Length: 2\r\n\r\nok')
        await writer.drain()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    gw = await make_gateway(BASIC.replace("UPSTREAM_URL", f"http://127.0.0.1:{port}"))
    host, gw_port = gw.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(gw_port))
    writer.write(b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n")
    head = await reader.readuntil(b"\r\n\r\n")
    assert b'\r\nETag: "caf\xe9"\r\n' in head
    writer.close()
    server.close()


async def test_http10_client_gets_a_streamed_body_delimited_by_close(
    make_gateway: GatewayFactory,
) -> None:
    gw = await make_gateway(BASIC)
    host, port = gw.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    size = 3 * 1024 * 1024
    writer.write(b"GET /bytes/%d HTTP/1.0\r\nHost: x\r\n\r\n" % size)
    data = await reader.read()  # until the gateway closes
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 200")
    assert b"Transfer-Encoding" not in head
    assert body == pattern(size)
    writer.close()


async def test_request_body_encoding_is_not_decoded(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(BASIC)
    body = gzip.compress(b"x" * 10000)
    headers = {"Content-Encoding": "gzip", "Content-Type": "text/plain"}
    async with gw.request("POST", "/upload", data=body, headers=headers) as response:
        seen = await response.json()
    assert seen["body_sha256"] == hashlib.sha256(body).hexdigest()


async def test_head_keeps_the_length_of_the_get_body(
    make_gateway: GatewayFactory, upstream: Upstream
) -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=b"x" * 1234)

    upstream.route("/sized", handler)
    gw = await make_gateway(BASIC)
    async with gw.request("HEAD", "/sized") as response:
        assert response.status == 200
        assert response.headers["Content-Length"] == "1234"
        assert await response.read() == b""
    async with gw.request("GET", "/sized") as response:
        assert len(await response.read()) == 1234


@pytest.mark.parametrize("status", [204, 304])
async def test_bodiless_statuses(make_gateway: GatewayFactory, status: int) -> None:
    gw = await make_gateway(BASIC)
    async with gw.request("GET", f"/status/{status}?h.ETag=%22v1%22") as response:
        assert response.status == status
        assert response.headers["ETag"] == '"v1"'
        assert await response.read() == b""
    # The connection stays usable afterwards.
    async with gw.request("GET", "/echo") as response:
        assert response.status == 200
