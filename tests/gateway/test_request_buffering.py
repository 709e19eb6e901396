"""Request bodies up to `buffer_request_body` are read whole before the upstream is contacted;
`client.request_timeout` bounds a whole request (issue 22, item 1)."""

from __future__ import annotations

import asyncio
import json
import time

from tests.conftest import GatewayFactory
from tests.support.polling import eventually
from tests.support.upstream import Upstream

CONFIG = """
client: {request_timeout: 1s, body_timeout: 5s}
buffer_request_body: 64KiB
upstreams:
  backend: {targets: [UPSTREAM_URL]}
routes:
  - {name: small, match: {path: /small}, upstream: backend, buffer_request_body: 1KiB}
  - {name: all, match: {path: /}, upstream: backend}
"""


class RawUpstream:
    """An upstream on a bare socket: records when each request head arrives, and its bytes."""

    def __init__(self) -> None:
        self.heads: list[tuple[float, bytes]] = []
        self.bodies: list[bytes] = []
        self.ended: list[str] = []  # "answered" or "aborted", per request
        self.url = ""
        self._server: asyncio.Server | None = None

    async def start(self) -> RawUpstream:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"
        return self

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            self.heads.append((time.monotonic(), head))
            length = int(_header(head, b"content-length") or 0)
            body = await reader.readexactly(length)
        except (asyncio.IncompleteReadError, ConnectionError):
            self.ended.append("aborted")
            return
        self.bodies.append(body)
        self.ended.append("answered")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
        await writer.drain()
        writer.close()

    def close(self) -> None:
        if self._server is not None:
            self._server.close()


def _header(head: bytes, name: bytes) -> bytes | None:
    for line in head.split(b"\r\n")[1:]:
        key, _, value = line.partition(b":")
        if key.strip().lower() == name:
            return value.strip()
    return None


async def _open(url: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = url.removeprefix("http://").split(":")
    return await asyncio.open_connection(host, int(port))


async def _status(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    data = await reader.read()  # each case here ends with the gateway closing
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


async def _upload_in_two_halves(url: str, path: str, size: int) -> tuple[float, int]:
    """Send a body of `size` bytes in two halves 0.3s apart; returns when the second half
    left and the answer's status."""
    reader, writer = await _open(url)
    half = size // 2
    writer.write(
        b"POST %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: %d\r\n\r\n"
        % (path.encode(), size)
    )
    writer.write(b"a" * half)
    await writer.drain()
    await asyncio.sleep(0.3)  # the gap under test: does the upstream see the head before it?
    sent = time.monotonic()
    writer.write(b"b" * (size - half))
    await writer.drain()
    status, _ = await _status(reader)
    writer.close()
    return sent, status


async def test_a_body_just_under_the_buffer_size_reaches_the_upstream_whole(
    make_gateway: GatewayFactory,
) -> None:
    raw = await RawUpstream().start()
    gw = await make_gateway(CONFIG.replace("UPSTREAM_URL", raw.url))
    size = 64 * 1024 - 1
    sent, status = await _upload_in_two_halves(gw.url, "/up", size)
    assert status == 200
    ((arrived, head),) = raw.heads
    # Contacted only once the last byte was in: head and whole body in one go, by length.
    assert arrived >= sent
    assert _header(head, b"content-length") == str(size).encode()
    assert raw.bodies == [b"a" * (size // 2) + b"b" * (size - size // 2)]
    raw.close()


async def test_a_chunked_body_under_the_buffer_size_goes_upstream_by_length(
    make_gateway: GatewayFactory,
) -> None:
    raw = await RawUpstream().start()
    gw = await make_gateway(CONFIG.replace("UPSTREAM_URL", raw.url))
    reader, writer = await _open(gw.url)
    writer.write(
        b"POST /up HTTP/1.1\r\nHost: x\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    writer.write(b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
    status, _ = await _status(reader)
    assert status == 200
    ((_, head),) = raw.heads
    assert _header(head, b"content-length") == b"11"
    assert _header(head, b"transfer-encoding") is None
    assert raw.bodies == [b"hello world"]
    raw.close()


async def test_a_body_over_the_buffer_size_streams(make_gateway: GatewayFactory) -> None:
    raw = await RawUpstream().start()
    gw = await make_gateway(CONFIG.replace("UPSTREAM_URL", raw.url))
    # The route's own limit (1KiB) applies: 2KiB streams, the head leaves before the end.
    sent, status = await _upload_in_two_halves(gw.url, "/small", 2048)
    assert status == 200
    ((arrived, _),) = raw.heads
    assert arrived < sent
    assert raw.bodies == [b"a" * 1024 + b"b" * 1024]
    raw.close()


async def test_slow_body_clients_get_408_and_the_upstream_never_sees_them(
    make_gateway: GatewayFactory, upstream: Upstream
) -> None:
    gw = await make_gateway(CONFIG)
    clients = [await _open(gw.url) for _ in range(20)]
    for _, writer in clients:
        # The slow POST of the issue: a long body, one byte at a time.
        writer.write(
            b"POST /up HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 60000\r\n\r\n"
        )

    async def trickle(writer: asyncio.StreamWriter) -> None:
        while not writer.is_closing():
            writer.write(b"x")
            await asyncio.sleep(0.2)

    tricklers = [asyncio.ensure_future(trickle(writer)) for _, writer in clients]
    started = time.monotonic()
    async with asyncio.timeout(10):
        answers = await asyncio.gather(*(_status(reader) for reader, _ in clients))
    elapsed = time.monotonic() - started
    for task in tricklers:
        task.cancel()
    for _, writer in clients:
        writer.close()
    assert [status for status, _ in answers] == [408] * 20
    assert all(json.loads(body)["error"] == "request_timeout" for _, body in answers)
    assert 0.9 < elapsed < 5
    assert upstream.hits == {}

    def logged() -> bool:
        lines = gw.access_lines()
        return len(lines) == 20 and all(
            line["status"] == 408 and line.get("aborted") == "request_timeout" for line in lines
        )

    await eventually(logged, "20 access lines saying aborted: request_timeout")


async def test_a_streamed_body_past_request_timeout_aborts_the_upstream_request(
    make_gateway: GatewayFactory,
) -> None:
    raw = await RawUpstream().start()
    gw = await make_gateway(CONFIG.replace("UPSTREAM_URL", raw.url))
    reader, writer = await _open(gw.url)
    writer.write(
        b"POST /small HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 100000\r\n\r\n"
    )
    writer.write(b"x" * 4096)  # past the route's buffer: the upstream request has begun

    async def trickle() -> None:
        while not writer.is_closing():
            writer.write(b"x")
            await asyncio.sleep(0.2)

    trickler = asyncio.ensure_future(trickle())
    async with asyncio.timeout(10):
        status, _ = await _status(reader)
    trickler.cancel()
    writer.close()
    assert status == 408
    await eventually(lambda: raw.ended == ["aborted"], "the upstream request aborted")
    assert len(raw.heads) == 1
    raw.close()


async def test_a_policy_reading_the_body_itself_gets_408_too(
    make_gateway: GatewayFactory, upstream: Upstream
) -> None:
    # The queue reads a whole body before it answers 202: the request deadline bounds it too.
    queue_route = (
        "  - {name: hooks, match: {path: /hooks}, upstream: backend,"
        " policies: [{queue: {max_body: 64KiB}}]}\n"
    )
    gw = await make_gateway(CONFIG.replace("routes:\n", "routes:\n" + queue_route))
    reader, writer = await _open(gw.url)
    writer.write(
        b"POST /hooks HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 9000\r\n\r\n"
    )

    async def trickle() -> None:
        while not writer.is_closing():
            writer.write(b"x")
            await asyncio.sleep(0.2)

    trickler = asyncio.ensure_future(trickle())
    async with asyncio.timeout(10):
        status, body = await _status(reader)
    trickler.cancel()
    writer.close()
    assert status == 408
    assert json.loads(body)["error"] == "request_timeout"
    assert upstream.hits == {}
    assert gw.access_lines()[-1]["route"] == "hooks"
