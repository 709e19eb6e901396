"""An upstream on a raw socket that parses what it receives strictly (llhttp, as a careful
server would) and records each message, so a test can compare its view of the message
boundaries with the gateway's."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import httptools

_OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Raw-Upstream: 1\r\n\r\nok"


@dataclass
class Received:
    """One message as the upstream parsed it."""

    method: str
    path: str
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytearray = field(default_factory=bytearray)


class _Connection(asyncio.Protocol):
    def __init__(self, upstream: RawUpstream) -> None:
        self.upstream = upstream
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.current: Received | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self.upstream.errors.append(str(exc))
            if self.transport is not None:
                self.transport.close()

    def on_url(self, url: bytes) -> None:
        self.current = Received("", url.decode("latin-1"))

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.current is not None:
            self.current.headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        if self.current is not None:
            self.current.method = self.parser.get_method().decode("latin-1")

    def on_body(self, body: bytes) -> None:
        if self.current is not None:
            self.current.body += body

    def on_message_complete(self) -> None:
        if self.current is not None:
            self.upstream.received.append(self.current)
            self.current = None
        if self.transport is not None:
            self.transport.write(_OK)


class RawUpstream:
    """`async with RawUpstream() as upstream:` listens on `upstream.url`; `received` holds the
    messages it parsed, `errors` the parse errors (each closes its connection)."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.errors: list[str] = []
        self.url = ""
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> RawUpstream:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Connection(self), "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
