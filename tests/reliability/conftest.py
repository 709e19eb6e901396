"""Fixtures for the reliability tests: a real `gateway run` with every policy on a private Redis
that the test may kill, stop and restart on the same port."""

from __future__ import annotations

import asyncio
import json
import secrets
import textwrap
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support.harness import GatewayProcess
from tests.support.ports import free_port
from tests.support.redis_server import RedisServer


def policies_config(
    *, port: int, admin: int, redis_url: str, upstream: str, workers: int = 2, extra: str = ""
) -> str:
    """One route per policy (and per `on_store_error`), all to `upstream`."""
    return (
        textwrap.dedent(
            f"""\
            listen: 127.0.0.1:{port}
            workers: {workers}
            admin: {{listen: 127.0.0.1:{admin}}}
            redis: {{url: '{redis_url}', timeout: 250ms}}
            shutdown_timeout: 5s
            upstreams:
              backend:
                targets: ["{upstream}"]
                timeouts: {{connect: 1s, read: 5s}}
            routes:
              - name: limited
                match: {{path: /limited}}
                upstream: backend
                policies:
                  - rate_limit: {{algorithm: sliding_window, limit: 10000, window: 1m}}
              - name: strict
                match: {{path: /strict}}
                upstream: backend
                policies:
                  - rate_limit:
                      algorithm: sliding_window
                      limit: 10000
                      window: 1m
                      on_store_error: deny
              - name: cached
                match: {{path: /cached}}
                upstream: backend
                policies:
                  - cache: {{ttl: 60s}}
              - name: account
                match: {{path: /account}}
                upstream: backend
                policies:
                  - session: {{cookie: sid, forward: {{user_id: X-User-Id}}}}
              - name: plain
                match: {{path: /}}
                upstream: backend
            """
        )
        + extra
    )


@dataclass
class Answer:
    """A response read whole."""

    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Deployment:
    """A running `gateway run`, its private Redis, and a client that spreads over workers."""

    gateway: GatewayProcess
    redis: RedisServer
    port: int
    admin: int
    session: aiohttp.ClientSession

    async def get(self, path: str, **kwargs: Any) -> Answer:
        async with self.session.get(f"http://127.0.0.1:{self.port}{path}", **kwargs) as response:
            return Answer(response.status, dict(response.headers), await response.read())

    async def admin_get(self, path: str) -> Answer:
        async with self.session.get(f"http://127.0.0.1:{self.admin}{path}") as response:
            return Answer(response.status, dict(response.headers), await response.read())

    async def metrics(self) -> str:
        return (await self.admin_get("/metrics")).body.decode()

    def login(self, user_id: str = "42") -> str:
        """A session written the way an application writes it."""
        session_id = secrets.token_urlsafe(24)
        self.redis.cli("HSET", f"session:{session_id}", "user_id", user_id)
        self.redis.cli("EXPIRE", f"session:{session_id}", "600")
        return session_id


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float) -> float:
    """Poll `check` until it holds; returns the seconds it took (TimeoutError past `timeout`)."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with asyncio.timeout(timeout):
        while not await check():  # noqa: ASYNC110 - the gateway tells nobody; it is polled
            await asyncio.sleep(0.05)
    return loop.time() - started


def metric(text: str, name: str) -> float:
    """The sum of every series of `name` in a Prometheus exposition (0 when absent)."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            total += float(line.rsplit(" ", 1)[1])
    return total


Deploy = Callable[..., Awaitable[Deployment]]


@pytest.fixture
async def deploy(tmp_path: Path) -> AsyncIterator[Deploy]:
    """`await deploy(upstream_url)`: Redis + `gateway run` (2 workers) + a client. On the way
    out it checks that no traceback reached the process log."""
    started: list[Deployment] = []

    async def make(upstream: str, workers: int = 2, extra: str = "") -> Deployment:
        redis = RedisServer().start()
        port, admin = free_port(), free_port()
        config = tmp_path / "gateway.yaml"
        config.write_text(
            policies_config(
                port=port,
                admin=admin,
                redis_url=redis.url,
                upstream=upstream,
                workers=workers,
                extra=extra,
            )
        )
        gateway = GatewayProcess(str(config))
        # Every request on a new connection: SO_REUSEPORT spreads them over the workers.
        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(force_close=True),
            timeout=aiohttp.ClientTimeout(total=10),
        )
        deployment = Deployment(gateway, redis, port, admin, session)
        started.append(deployment)
        await gateway.start()
        return deployment

    yield make
    for deployment in started:
        await deployment.session.close()
        await deployment.gateway.stop()
        deployment.redis.cleanup()
        assert "Traceback" not in deployment.gateway.stderr, deployment.gateway.stderr
