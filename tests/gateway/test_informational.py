"""Informational responses (RFC 9110 15.2) from a raw-socket upstream to a raw-socket client:
102 and 103 are forwarded to HTTP/1.1 clients as they arrive, before the final response, on
plain and cached routes; never to HTTP/1.0 clients, never stored; 100 Continue stays the
gateway's own.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest

from tests.conftest import GatewayFactory
from tests.gateway.test_proxy import BASIC
from tests.reliability.heads import Message, _Parser
from tests.support.harness import InProcessGateway

HINTS = b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n"
FINAL = b"HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nContent-Length: 5\r\n\r\nhello"

CACHED = """
upstreams:
  backend: {targets: [UPSTREAM_URL], timeouts: {connect: 1s, read: 2s}}
routes:
  - name: site
    match: {path: /}
    upstream: backend
    policies:
      - cache: {}
"""


class InterimUpstream:
    """Answers each request with `interim`, then waits for `release` (if set), then `final`."""

    def __init__(self) -> None:
        self.interim = HINTS
        self.final = FINAL
        self.release: asyncio.Event | None = None
        self.requests = 0
        self.url = ""

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                await reader.readuntil(b"\r\n\r\n")
                self.requests += 1
                writer.write(self.interim)
                await writer.drain()
                if self.release is not None:
                    await self.release.wait()
                writer.write(self.final)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()


@pytest.fixture
async def interim_upstream() -> AsyncIterator[InterimUpstream]:
    upstream = InterimUpstream()
    server = await asyncio.start_server(upstream.serve, "127.0.0.1", 0)
    upstream.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    yield upstream
    server.close()


class Client:
    """A raw client connection that parses every message the gateway sends, 1xx included."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.parser = _Parser(head_only=False)

    @classmethod
    async def open(cls, gateway: InProcessGateway) -> Client:
        host, port = gateway.url.removeprefix("http://").split(":")
        return cls(*await asyncio.open_connection(host, int(port)))

    async def until(self, done: Callable[[list[Message]], bool]) -> list[Message]:
        async with asyncio.timeout(5):
            while not done(self.parser.messages):
                data = await self.reader.read(65536)
                if not data:
                    break
                self.parser.parser.feed_data(data)
        return self.parser.messages

    async def get(self, path: str, version: bytes = b"1.1") -> list[Message]:
        self.parser.messages.clear()
        self.writer.write(
            b"GET %s HTTP/%s\r\nHost: shop.example\r\n\r\n" % (path.encode(), version)
        )
        return await self.until(lambda ms: any(m.complete and m.status >= 200 for m in ms))


def header(message: Message, name: bytes) -> bytes | None:
    for key, value in message.headers:
        if key.lower() == name.lower():
            return value
    return None


@pytest.mark.parametrize("route", [BASIC, CACHED], ids=["uncached", "cached"])
async def test_early_hints_reach_the_client_before_the_final_response(
    route: str, interim_upstream: InterimUpstream, make_gateway: GatewayFactory
) -> None:
    interim_upstream.release = asyncio.Event()
    gw = await make_gateway(route.replace("UPSTREAM_URL", interim_upstream.url))
    client = await Client.open(gw)
    client.writer.write(b"GET /page HTTP/1.1\r\nHost: shop.example\r\n\r\n")
    # The upstream holds its final answer until the client has seen the hints: they are
    # forwarded as they arrive, not with the final response.
    messages = await client.until(lambda ms: len(ms) >= 1 and ms[0].complete)
    assert messages[0].status == 103
    assert header(messages[0], b"Link") == b"</style.css>; rel=preload"
    interim_upstream.release.set()
    messages = await client.until(lambda ms: any(m.status == 200 and m.complete for m in ms))
    assert [m.status for m in messages] == [103, 200]
    assert bytes(messages[1].body) == b"hello"
    assert header(messages[1], b"Link") is None


async def test_hints_are_never_stored(
    interim_upstream: InterimUpstream, make_gateway: GatewayFactory
) -> None:
    gw = await make_gateway(CACHED.replace("UPSTREAM_URL", interim_upstream.url))
    client = await Client.open(gw)
    first = await client.get("/stored")
    assert [m.status for m in first] == [103, 200]
    assert header(first[1], b"X-Cache") == b"MISS"
    second = await client.get("/stored")  # from the store: the final response alone
    assert [m.status for m in second] == [200]
    assert header(second[0], b"X-Cache") == b"HIT"
    assert header(second[0], b"Link") is None
    assert interim_upstream.requests == 1


@pytest.mark.parametrize(
    ("interim", "forwarded"),
    [
        (b"HTTP/1.1 102 Processing\r\n\r\n", [102]),
        (HINTS + HINTS, [103, 103]),
        (b"HTTP/1.1 100 Continue\r\n\r\n", []),  # the gateway's own affair with its client
    ],
    ids=["102", "two-103", "100"],
)
async def test_which_interim_responses_are_forwarded(
    interim: bytes,
    forwarded: list[int],
    interim_upstream: InterimUpstream,
    make_gateway: GatewayFactory,
) -> None:
    interim_upstream.interim = interim
    gw = await make_gateway(BASIC.replace("UPSTREAM_URL", interim_upstream.url))
    client = await Client.open(gw)
    messages = await client.get("/x")
    assert [m.status for m in messages] == [*forwarded, 200]
    messages = await client.get("/x")  # the connections on both sides stay usable
    assert [m.status for m in messages] == [*forwarded, 200]


async def test_hop_by_hop_fields_of_a_hint_are_dropped(
    interim_upstream: InterimUpstream, make_gateway: GatewayFactory
) -> None:
    interim_upstream.interim = (
        b"HTTP/1.1 103 Early Hints\r\nConnection: X-Secret\r\nX-Secret: 1\r\n"
        b"Link: </a.js>; rel=preload\r\n\r\n"
    )
    gw = await make_gateway(BASIC.replace("UPSTREAM_URL", interim_upstream.url))
    client = await Client.open(gw)
    hint, _ = await client.get("/x")
    assert hint.headers == [(b"Link", b"</a.js>; rel=preload")]


async def test_http10_clients_get_no_interim_responses(
    interim_upstream: InterimUpstream, make_gateway: GatewayFactory
) -> None:
    gw = await make_gateway(BASIC.replace("UPSTREAM_URL", interim_upstream.url))
    client = await Client.open(gw)
    messages = await client.get("/x", version=b"1.0")
    assert [m.status for m in messages] == [200]
