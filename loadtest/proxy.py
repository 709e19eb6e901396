"""The reference the gateway must beat: the plainest aiohttp reverse proxy.

    python -m loadtest.proxy --port 8081 --upstream http://127.0.0.1:9000

One `ClientSession` per process; each request is forwarded (method, path with query, headers
without hop-by-hop ones, body), the answer is read whole and returned. No routing table, no
policies, no logging: what a developer writes in an afternoon. The gateway's target (issue 6)
is at least 1.5x its throughput, measured in the same `make bench` run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator, Mapping

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",  # aiohttp sets its own for the body it sends
    }
)
SESSION = web.AppKey("session", aiohttp.ClientSession)
UPSTREAM = web.AppKey("upstream", str)


def _filtered(headers: Mapping[str, str]) -> CIMultiDict[str]:
    # items() of a multidict yields every value of a repeated header, so none is lost.
    return CIMultiDict((k, v) for k, v in headers.items() if k.lower() not in _HOP)


async def forward(request: web.Request) -> web.Response:
    """Send the request on, return the upstream's answer."""
    body = await request.read() if request.body_exists else None
    url = URL(request.app[UPSTREAM] + request.raw_path, encoded=True)
    async with request.app[SESSION].request(
        request.method, url, headers=_filtered(request.headers), data=body, allow_redirects=False
    ) as upstream:
        payload = await upstream.read()
        return web.Response(
            status=upstream.status, headers=_filtered(upstream.headers), body=payload
        )


def make_app(upstream: str) -> web.Application:
    """The proxy app for `upstream` (scheme://host:port)."""
    app = web.Application()
    app[UPSTREAM] = upstream.rstrip("/")

    async def client(app: web.Application) -> AsyncIterator[None]:
        # Bodies are relayed as encoded; decoding would change them.
        app[SESSION] = aiohttp.ClientSession(auto_decompress=False)
        yield
        await app[SESSION].close()

    app.cleanup_ctx.append(client)
    app.router.add_route("*", "/{tail:.*}", forward)
    return app


async def serve(port: int, upstream: str, reuse_port: bool) -> None:
    """Serve until cancelled; prints `proxy listening on ...` once bound."""
    runner = web.AppRunner(make_app(upstream), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port, reuse_port=reuse_port, backlog=4096)
    await site.start()
    print(f"proxy listening on http://127.0.0.1:{port}", file=sys.stderr, flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> None:
    """Command line: `--port`, `--upstream`, `--reuse-port` (for several processes)."""
    parser = argparse.ArgumentParser(description="A plain aiohttp reverse proxy.")
    parser.add_argument("--port", type=int, default=8081)
    parser.add_argument("--upstream", default="http://127.0.0.1:9000")
    parser.add_argument("--reuse-port", action="store_true")
    args = parser.parse_args(argv)
    from loadtest.upstream import run

    with contextlib.suppress(KeyboardInterrupt):
        run(serve(args.port, args.upstream, args.reuse_port))


if __name__ == "__main__":
    main()
