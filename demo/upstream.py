"""A small upstream API for `make demo` and for trying the gateway by hand.

python -m demo.upstream --port 9000
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time

from aiohttp import WSMsgType, web

ITEMS = [{"id": i, "name": f"item {i}", "price": 10 * i} for i in range(1, 6)]


async def catalog(request: web.Request) -> web.Response:
    # Cacheable for 10 s, so the demo shows MISS, then HIT with a growing Age.
    body = {"items": ITEMS, "generated_at": time.time()}
    return web.json_response(body, headers={"Cache-Control": "public, max-age=10"})


async def account(request: web.Request) -> web.Response:
    return web.json_response(
        {
            "user_id": request.headers.get("X-User-Id"),
            "role": request.headers.get("X-User-Role"),
            "forwarded_for": request.headers.get("X-Forwarded-For"),
        }
    )


async def echo(request: web.Request) -> web.Response:
    body = await request.read()
    return web.json_response(
        {
            "method": request.method,
            "path": request.raw_path,
            "headers": dict(request.headers),
            "body_bytes": len(body),
        }
    )


async def slow(request: web.Request) -> web.Response:
    await asyncio.sleep(float(request.query.get("seconds", "2")))
    return web.json_response({"slept": True})


async def websocket(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    async for message in ws:
        if message.type == WSMsgType.TEXT:
            await ws.send_str(f"echo: {message.data}")
        elif message.type == WSMsgType.BINARY:
            await ws.send_bytes(message.data)
    return ws


def make_app() -> web.Application:
    app = web.Application()
    app.router.add_get("/catalog", catalog)
    app.router.add_get("/catalog/{tail:.*}", catalog)
    app.router.add_get("/account", account)
    app.router.add_get("/account/{tail:.*}", account)
    app.router.add_get("/ws", websocket)
    app.router.add_get("/slow", slow)
    app.router.add_route("*", "/{tail:.*}", echo)
    return app


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    args = parser.parse_args()
    try:
        web.run_app(make_app(), host=args.host, port=args.port, print=None, access_log=None)
    except OSError as exc:
        # One line, not a traceback: the cause and the way out are all the user needs.
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        print(
            f"demo upstream: cannot listen on {args.host}:{args.port}: {reason} "
            "(stop what holds it, or choose another port with --port)",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
