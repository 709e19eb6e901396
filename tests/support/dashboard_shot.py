"""The README's picture of the dashboard, taken as the tests render it:
`.venv/bin/python -m tests.support.dashboard_shot docs/images/dashboard.png`.

A real `gateway run` (two workers) on a private redis-server in front of a loopback upstream,
some traffic of several clients for half a minute, then headless Chromium's screenshot.
"""

from __future__ import annotations

import asyncio
import random
import sys
import tempfile
from pathlib import Path

import aiohttp
from aiohttp import web

from tests.support.chromium import render
from tests.support.harness import GatewayProcess
from tests.support.ports import free_port
from tests.support.redis_server import RedisServer
from tests.support.upstream import Upstream

TOKEN = "screenshot-token"
CONFIG = """\
listen: 127.0.0.1:{port}
admin: {{listen: 127.0.0.1:{admin}, token: {token}}}
workers: 2
redis: {{url: '{redis}'}}
upstreams:
  backend: {{targets: ["{upstream}"]}}
  legacy: {{targets: ["http://127.0.0.1:{gone}"]}}
policies:
  per-key:
    rate_limit: {{algorithm: sliding_window, limit: 40, window: 10s, key: header.X-API-Key}}
routes:
  - {{name: catalog, match: {{path: /catalog}}, upstream: backend, policies: [{{cache: {{ttl: 2s}}}}]}}
  - {{name: orders, match: {{path: /orders}}, upstream: backend, policies: [per-key]}}
  - name: search
    match: {{path: /search}}
    upstream: backend
    policies: [{{rate_limit: {{algorithm: token_bucket, rate: 5/s, burst: 10, key: client_ip}}}}]
  - {{name: legacy, match: {{path: /legacy}}, upstream: legacy}}
"""
KEYS = [f"customer-{n}-api-key-{n * 7919:06d}" for n in range(1, 9)]


async def drive(url: str, seconds: float) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    weights = [2**-n for n in range(len(KEYS))]
    ips = [f"127.0.0.{n}" for n in range(2, 6)]
    sessions = [
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=(ip, 0))) for ip in ips
    ]
    try:
        while loop.time() < end:
            batch = []
            for _ in range(12):
                session = random.choice(sessions)
                pick = random.random()
                if pick < 0.45:
                    path = f"/catalog/item/{random.randint(1, 20)}"
                    batch.append(session.get(url + path))
                elif pick < 0.85:
                    key = random.choices(KEYS, weights)[0]
                    batch.append(session.get(url + "/orders/x", headers={"X-API-Key": key}))
                elif pick < 0.97:
                    batch.append(session.get(url + "/search?q=x"))
                else:
                    batch.append(session.get(url + "/legacy/x"))
            for request in asyncio.as_completed([_read(r) for r in batch]):
                await request
            await asyncio.sleep(0.05)
    finally:
        for session in sessions:
            await session.close()


async def _read(request: object) -> None:
    async with request as response:  # type: ignore[attr-defined]
        await response.read()


async def main(out: Path) -> None:
    redis = RedisServer().start()
    upstream = Upstream()
    runner = web.AppRunner(upstream.app())
    await runner.setup()
    up_port = free_port()
    await web.TCPSite(runner, "127.0.0.1", up_port).start()
    port, admin = free_port(), free_port()
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "gateway.yaml"
        config.write_text(
            CONFIG.format(
                port=port,
                admin=admin,
                token=TOKEN,
                redis=redis.url,
                upstream=f"http://127.0.0.1:{up_port}",
                gone=free_port(),
            )
        )
        gateway = await GatewayProcess(str(config)).start()
        try:
            url = f"http://127.0.0.1:{port}"
            driver = asyncio.ensure_future(drive(url, 45))
            await asyncio.sleep(30)
            await render(
                f"http://127.0.0.1:{admin}/-/dashboard#token={TOKEN}",
                budget_ms=15000,
                screenshot=out,
                size="1360,980",
            )
            await driver
        finally:
            await gateway.stop()
            await runner.cleanup()
            redis.cleanup()
    print(f"wrote {out}")


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/images/dashboard.png")
    asyncio.run(main(target.resolve()))
