"""An app embedding the policies and a standalone `gateway run` of the same file share one
bucket; and examples/aiohttp_app.py runs as the docs say (issue 16)."""

from __future__ import annotations

import asyncio
import os
import sys
import textwrap
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from gateway.aiohttp import Policies
from tests.support.harness import GatewayProcess
from tests.support.ports import free_port
from tests.support.upstream import Upstream

Client = Callable[..., Awaitable[Any]]
ROOT = Path(__file__).resolve().parents[2]


def state(response: Any) -> str:
    """`r=N` of the RateLimit field (absent on an answer without it)."""
    field = response.headers.get("RateLimit", "")
    return field.split(";")[1] if field else "-"


async def test_a_limit_of_3_is_one_bucket_for_the_app_and_the_gateway(
    aiohttp_client: Client, tmp_path: Path, upstream: Upstream, redis_url: str
) -> None:
    port = free_port()
    config = tmp_path / "gateway.yaml"
    config.write_text(
        textwrap.dedent(
            f"""\
            listen: 127.0.0.1:{port}
            admin: {{listen: 127.0.0.1:{free_port()}}}
            redis: {{url: "{redis_url}"}}
            upstreams:
              backend: {{targets: ["{upstream.url}"]}}
            policies:
              per-client:
                rate_limit: {{algorithm: sliding_window, limit: 3, window: 1m, key: client_ip}}
            routes:
              - {{name: orders, match: {{path: /orders}}, upstream: backend, policies: [per-client]}}
            """
        )
    )
    gateway = await GatewayProcess(str(config)).start()
    try:
        policies = Policies.from_config(str(config))

        @policies.chain("app-orders", "per-client")
        async def orders(request: web.Request) -> web.Response:
            return web.json_response({"from": "app"})

        app = web.Application()
        app.cleanup_ctx.append(policies.cleanup_ctx)
        app.router.add_get("/orders", orders)
        client = await aiohttp_client(app)
        edge = f"http://127.0.0.1:{port}/orders"

        figures = []
        async with aiohttp.ClientSession() as session:
            for _ in range(2):
                response = await client.get("/orders")
                figures.append(("app", response.status, state(response)))
            async with session.get(edge) as response:
                figures.append(("gateway", response.status, state(response)))
            response = await client.get("/orders")
            figures.append(("app", response.status, state(response)))
            async with session.get(edge) as response:
                figures.append(("gateway", response.status, state(response)))
                refused = await response.json()
        print("shared bucket:", figures)
        assert figures == [
            ("app", 200, "r=2"),
            ("app", 200, "r=1"),
            ("gateway", 200, "r=0"),
            ("app", 429, "r=0"),
            ("gateway", 429, "r=0"),
        ]
        assert refused["error"] == "rate_limited"
        assert upstream.hits["/orders"] == 1
    finally:
        await gateway.stop()


async def test_the_example_app_runs(tmp_path: Path) -> None:
    port = free_port()
    env = dict(os.environ, PORT=str(port), GATEWAY_CONFIG=str(ROOT / "config.example.yaml"))
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(ROOT / "examples" / "aiohttp_app.py"),
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert process.stdout is not None
    try:
        async with asyncio.timeout(60):  # the "Running on" line once the app has started
            while b"Running on" not in await process.stdout.readline():
                assert process.returncode is None
        base = f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{base}/hello") as response:
                assert response.status == 200
                assert response.headers["RateLimit-Policy"] == '"per-client";q=100;w=60'
            caches = []
            for _ in range(2):
                async with session.get(f"{base}/catalog") as response:
                    caches.append((response.headers["X-Cache"], await response.json()))
            assert [cache for cache, _ in caches] == ["MISS", "HIT"]
            assert caches[1][1]["handler_runs"] == 1
            async with session.get(f"{base}/account") as response:
                assert response.status == 401
            async with session.post(f"{base}/login") as response:
                sid = (await response.json())["id"]
            spoofed = {"X-User-Id": "1", "Cookie": f"sid={sid}"}
            async with session.get(f"{base}/account", headers=spoofed) as response:
                assert response.status == 200
                assert (await response.json())["user_id"] == "42"
    finally:
        process.terminate()
        await process.wait()
