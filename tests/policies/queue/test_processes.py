"""At least once, end to end: real `gateway run` processes (two workers each), a private
redis-server, a real upstream on a real port that is down, then up, then slow.

The figures of the SIGKILL test (accepted, delivered, duplicates, lost) are printed
(`pytest -s`) and docs/policies/queue.md quotes a run.
"""

from __future__ import annotations

import asyncio
import os
import signal
import textwrap
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tests.support.harness import GatewayProcess
from tests.support.ports import free_port
from tests.support.redis_server import RedisServer


class SlowUpstream:
    """Records every delivery's Idempotency-Key; answers 200 after `delay` seconds."""

    def __init__(self, port: int, delay: float) -> None:
        self.port = port
        self.delay = delay
        self.keys: list[str] = []
        self._runner: web.AppRunner | None = None

    async def handle(self, request: web.Request) -> web.Response:
        await request.read()
        self.keys.append(request.headers.get("Idempotency-Key", ""))
        await asyncio.sleep(self.delay)
        return web.Response(text="ok")

    async def start(self) -> SlowUpstream:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self._runner = web.AppRunner(app, shutdown_timeout=0.1)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


class Site:
    """Redis, the upstream's port, and gateways made from one config."""

    def __init__(self, tmp: Path, redis: RedisServer, **options: str) -> None:
        self.redis = redis
        self.upstream_port = free_port()
        self.tmp = tmp
        self.options = options
        self.gateways: list[tuple[GatewayProcess, int, int]] = []
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(force_close=True),  # spread over the workers
            timeout=aiohttp.ClientTimeout(total=20),
        )

    async def gateway(self) -> tuple[GatewayProcess, int, int]:
        port, admin = free_port(), free_port()
        options = ", ".join(f"{k}: {v}" for k, v in self.options.items())
        path = self.tmp / f"gateway-{port}.yaml"
        path.write_text(
            textwrap.dedent(
                f"""\
                listen: 127.0.0.1:{port}
                workers: 2
                admin: {{listen: 127.0.0.1:{admin}}}
                redis: {{url: '{self.redis.url}', timeout: 500ms}}
                shutdown_timeout: 5s
                upstreams:
                  backend:
                    targets: ["http://127.0.0.1:{self.upstream_port}"]
                    timeouts: {{connect: 1s, read: 5s}}
                routes:
                  - name: hooks
                    match: {{path: /hooks, methods: [POST]}}
                    upstream: backend
                    policies:
                      - queue: {{{options}}}
                """
            )
        )
        process = await GatewayProcess(str(path)).start()
        self.gateways.append((process, port, admin))
        return process, port, admin

    async def post_many(self, port: int, n: int) -> list[str]:
        async def one(i: int) -> str:
            url = f"http://127.0.0.1:{port}/hooks/event"
            async with self.session.post(url, json={"n": i}) as response:
                assert response.status == 202, await response.text()
                return str((await response.json())["queued"])

        return list(await asyncio.gather(*(one(i) for i in range(n))))

    async def status(self, admin: int) -> dict[str, Any]:
        async with self.session.get(f"http://127.0.0.1:{admin}/-/queue") as response:
            assert response.status == 200
            payload: dict[str, Any] = await response.json()
            return payload["routes"]["hooks"]

    async def close(self) -> None:
        await self.session.close()
        for process, _, _ in self.gateways:
            await process.stop()


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[Any]:
    made: list[Site] = []
    redis = RedisServer().start()

    def make(**options: str) -> Site:
        made.append(Site(tmp_path, redis, **options))
        return made[-1]

    yield make
    for one in made:
        await one.close()
    redis.cleanup()


async def until(check: Any, timeout: float) -> None:
    async with asyncio.timeout(timeout):
        while not await check():  # noqa: ASYNC110 - the queue tells no one; it is polled
            await asyncio.sleep(0.05)


def figures(accepted: list[str], received: list[str]) -> dict[str, int]:
    counts = Counter(received)
    delivered = len(set(accepted) & set(counts))
    return {
        "accepted": len(accepted),
        "delivered": delivered,
        "duplicates": sum(n - 1 for key, n in counts.items() if key in set(accepted)),
        "lost": len(accepted) - delivered,
    }


async def test_sigkill_mid_delivery_loses_nothing(site: Any) -> None:
    s = site(
        visibility_timeout="2s",
        max_attempts=1000,
        concurrency=8,
        poll="100ms",
        retry="{first: 100ms, max: 500ms}",
    )
    first, port, _ = await s.gateway()

    # The upstream is down: every request is still accepted, each under its own id.
    accepted = await s.post_many(port, 200)
    assert len(set(accepted)) == 200
    assert all(key.count("-") == 1 for key in accepted)

    # The upstream comes up, slow: deliveries are in flight (received, not yet answered)
    # when the first gateway is SIGKILLed, supervisor and workers at once.
    upstream = await SlowUpstream(s.upstream_port, delay=0.3).start()
    try:

        async def some_arrived() -> bool:
            return len(upstream.keys) >= 30

        await until(some_arrived, timeout=30)
        assert first.process is not None
        os.killpg(first.process.pid, signal.SIGKILL)
        await first.wait(10)
        at_kill = len(upstream.keys)

        await s.gateway()

        async def all_arrived() -> bool:
            return set(accepted) <= set(upstream.keys)

        await until(all_arrived, timeout=60)
        result = figures(accepted, upstream.keys)
        print(f"\nSIGKILL mid-delivery ({at_kill} received before the kill): {result}")
        assert result["lost"] == 0
        assert result["delivered"] == 200
        assert all(key in set(accepted) for key in upstream.keys)  # each with its key
    finally:
        await upstream.stop()


async def test_sigterm_hands_deliveries_in_flight_back_at_once(site: Any) -> None:
    # A long visibility timeout: only entries handed back on SIGTERM are delivered quickly.
    s = site(visibility_timeout="60s", concurrency=4, poll="100ms")
    upstream = await SlowUpstream(s.upstream_port, delay=2.0).start()
    try:
        first, port, _ = await s.gateway()
        accepted = await s.post_many(port, 30)

        async def in_flight() -> bool:
            return len(upstream.keys) >= 4

        await until(in_flight, timeout=30)
        first.signal(signal.SIGTERM)
        assert await first.wait(30) == 0
        assert "Traceback" not in first.stderr, first.stderr
        upstream.delay = 0.0
        _, _, admin = await s.gateway()

        async def all_arrived() -> bool:
            return set(accepted) <= set(upstream.keys)

        await until(all_arrived, timeout=20)  # well before the 60 s visibility timeout

        async def drained() -> bool:
            state = await s.status(admin)
            return bool(state["backlog"] == 0 and state["in_flight"] == 0)

        await until(drained, timeout=10)
        print(f"\nSIGTERM mid-delivery: {figures(accepted, upstream.keys)}")
    finally:
        await upstream.stop()


async def test_503_while_redis_is_down_then_accepting_again(site: Any) -> None:
    s = site(poll="100ms")
    _, port, admin = await s.gateway()
    s.redis.kill()
    url = f"http://127.0.0.1:{port}/hooks/event"
    for _ in range(5):
        async with s.session.post(url, data=b"x") as response:
            assert response.status == 503
            assert (await response.json())["error"] == "queue_unavailable"
    async with s.session.get(f"http://127.0.0.1:{admin}/-/queue") as response:
        assert response.status == 503
    s.redis.start()  # same port, empty: a killed Redis without persistence

    async def accepting() -> bool:
        async with s.session.post(url, data=b"y") as response:
            return response.status == 202

    await until(accepting, timeout=15)
