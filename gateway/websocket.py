"""WebSocket upgrades on routes with `websocket: true`: the chain runs on the upgrade request,
then messages are relayed both ways until either side closes."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import aiohttp
from aiohttp import web

from gateway.errors import UpstreamError, UpstreamTimeout
from gateway.http import Handler, Request, Response
from gateway.upstream.pool import Upstream

log = logging.getLogger("gateway.websocket")

# The client library makes its own handshake; these must not be copied from the client.
_HANDSHAKE = frozenset(
    {
        "sec-websocket-key",
        "sec-websocket-version",
        "sec-websocket-extensions",
        "sec-websocket-protocol",
        "host",
        "content-length",
    }
)


class WebSocketProxy:
    """Terminal handler of a WebSocket route: upgrades go to `_tunnel`, the rest to HTTP."""

    def __init__(self, http: Handler, upstream: Upstream) -> None:
        self.http = http
        self.upstream = upstream
        self._session: aiohttp.ClientSession | None = None

    async def __call__(self, request: Request) -> Response:
        raw = request.raw
        if raw is None or raw.headers.get("Upgrade", "").lower() != "websocket":
            return await self.http(request)
        upstream_ws = await self._connect(request)

        async def takeover(client_request: web.BaseRequest) -> web.StreamResponse:
            return await self._relay(client_request, upstream_ws)

        return Response(101, upgrade=takeover)

    async def _connect(self, request: Request) -> aiohttp.ClientWebSocketResponse:
        if self._session is None:
            self._session = aiohttp.ClientSession(auto_decompress=False)
        timeouts = self.upstream.config.timeouts
        last: UpstreamError = UpstreamError()
        raw_protocols = request.raw.headers.get("Sec-WebSocket-Protocol", "") if request.raw else ""
        protocols = [p.strip() for p in raw_protocols.split(",") if p.strip()]
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HANDSHAKE}
        for target in self.upstream.candidates():
            scheme = "wss" if target.tls else "ws"
            url = f"{scheme}://{target.host_header}{target.base_path}{request.target}"
            try:
                return await self._session.ws_connect(
                    url,
                    headers=headers,
                    protocols=protocols,
                    timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=timeouts.read),
                    autoping=True,
                    max_msg_size=0,
                    compress=0,
                )
            except aiohttp.WSServerHandshakeError as exc:
                log.info("upstream refused the WebSocket handshake: %s", exc.status)
                raise UpstreamError() from exc
            except TimeoutError:
                last = UpstreamTimeout()
            except (aiohttp.ClientError, OSError):
                target.down_until = time.monotonic() + target.fail_timeout
                last = UpstreamError()
        raise last

    async def _relay(
        self, client_request: web.BaseRequest, upstream_ws: aiohttp.ClientWebSocketResponse
    ) -> web.StreamResponse:
        protocols = (upstream_ws.protocol,) if upstream_ws.protocol else ()
        client_ws = web.WebSocketResponse(protocols=protocols, autoping=True, max_msg_size=0)
        await client_ws.prepare(client_request)

        async def pump(source: Any, sink: Any) -> None:
            async for message in source:
                if message.type == aiohttp.WSMsgType.TEXT:
                    await sink.send_str(message.data)
                elif message.type == aiohttp.WSMsgType.BINARY:
                    await sink.send_bytes(message.data)
                else:
                    break
            await sink.close(code=source.close_code or aiohttp.WSCloseCode.OK)

        tasks = [
            asyncio.ensure_future(pump(client_ws, upstream_ws)),
            asyncio.ensure_future(pump(upstream_ws, client_ws)),
        ]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await upstream_ws.close()
            await client_ws.close()
        return client_ws

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
