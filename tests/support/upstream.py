"""A real upstream for tests: an aiohttp app on a loopback port that records what it saw."""

from __future__ import annotations

import asyncio
import hashlib
from collections import Counter
from collections.abc import Awaitable, Callable

from aiohttp import WSMsgType, web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Upstream:
    """Default behaviour echoes the request as JSON; tests install handlers per path.

    `hits` counts requests per path; `requests` keeps the last requests' method, path
    (as received, with query) and headers.
    """

    def __init__(self) -> None:
        self.hits: Counter[str] = Counter()
        self.requests: list[dict[str, object]] = []
        self.handlers: dict[str, Handler] = {}
        self.url = ""

    def route(self, path: str, handler: Handler) -> None:
        self.handlers[path] = handler

    def app(self) -> web.Application:
        app = web.Application(client_max_size=2**31)
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        return app

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        self.hits[request.path] += 1
        self.requests.append(
            {"method": request.method, "path": request.raw_path, "headers": dict(request.headers)}
        )
        handler = self.handlers.get(request.path)
        if handler is not None:
            return await handler(request)
        head, _, rest = request.path.lstrip("/").partition("/")
        builtin = _BUILTIN.get(head)
        if builtin is not None:
            return await builtin(request, rest)
        return await _echo(request, rest)


async def _echo(request: web.Request, _: str) -> web.Response:
    digest = hashlib.sha256()
    size = 0
    async for chunk in request.content.iter_any():
        digest.update(chunk)
        size += len(chunk)
    return web.json_response(
        {
            "method": request.method,
            "path": request.raw_path,
            "headers": dict(request.headers),
            "header_list": [[k, v] for k, v in request.headers.items()],
            "body_bytes": size,
            "body_sha256": digest.hexdigest(),
        }
    )


def pattern(size: int) -> bytes:
    """The deterministic body `/bytes/N` streams (so tests can check integrity)."""
    block = bytes(range(256)) * 256
    return (block * (size // len(block) + 1))[:size]


async def _bytes(request: web.Request, rest: str) -> web.StreamResponse:
    size = int(rest or "0")
    response = web.StreamResponse()
    if request.query.get("length") == "1":
        response.content_length = size
    await response.prepare(request)
    block = bytes(range(256)) * 256
    sent = 0
    while sent < size:
        chunk = block[: min(len(block), size - sent)]
        await response.write(chunk)
        sent += len(chunk)
    await response.write_eof()
    return response


async def _status(request: web.Request, rest: str) -> web.Response:
    headers = {k[2:]: v for k, v in request.query.items() if k.startswith("h.")}
    return web.Response(status=int(rest), text=request.query.get("body", ""), headers=headers)


async def _slow(request: web.Request, rest: str) -> web.Response:
    await asyncio.sleep(float(rest or "1"))
    return web.json_response({"slept": rest})


async def _ws(request: web.Request, _: str) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(protocols=("chat",))
    await ws.prepare(request)
    async for message in ws:
        if message.type == WSMsgType.TEXT:
            await ws.send_str(f"echo: {message.data}")
        elif message.type == WSMsgType.BINARY:
            await ws.send_bytes(message.data)
    return ws


_BUILTIN = {"bytes": _bytes, "status": _status, "slow": _slow, "ws": _ws}
