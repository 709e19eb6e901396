"""Fixtures for the cache policy: gateways sharing one Redis, answers as plain values."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from multidict import CIMultiDictProxy

from gateway.store import Store
from gateway.store.memory import MemoryStore
from gateway.store.redis import RedisStore
from tests.conftest import GatewayFactory
from tests.support.harness import InProcessGateway

HOST = "shop.example"
"""Every request names this host: two gateways on two ports still serve one site."""

PROPAGATION = 0.1
"""The bound on a change reaching every gateway's near cache (pub/sub): the store itself
changes at once, other processes' in-memory copies go within this."""


def config(options: str, *, read_timeout: str = "5s", extra_routes: str = "") -> str:
    """A catch-all route to the test upstream with `cache: {options}`."""
    return f"""
upstreams:
  backend:
    targets: [UPSTREAM_URL]
    timeouts: {{connect: 1s, read: {read_timeout}}}
routes:
{extra_routes}
  - name: site
    match: {{path: /}}
    upstream: backend
    policies:
      - cache: {{{options}}}
"""


@dataclass
class Answer:
    """A response read whole."""

    status: int
    headers: CIMultiDictProxy[str]
    body: bytes

    @property
    def cache(self) -> str | None:
        return self.headers.get("X-Cache")

    @property
    def text(self) -> str:
        return self.body.decode()


async def fetch(gateway: InProcessGateway, path: str, method: str = "GET", **kwargs: Any) -> Answer:
    headers = {"Host": HOST, **kwargs.pop("headers", {})}
    async with gateway.request(method, path, headers=headers, **kwargs) as response:
        return Answer(response.status, response.headers, await response.read())


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 5.0) -> None:
    """Await a condition the gateway reaches on its own (a background refresh finishing):
    nothing outside the gateway is told when that happens, so it is checked, bounded."""
    async with asyncio.timeout(timeout):
        while not await check():  # noqa: ASYNC110 - no event exists to wait on
            await asyncio.sleep(0.02)


Pair = Callable[[str], Awaitable[tuple[InProcessGateway, InProcessGateway]]]


@pytest.fixture
async def pair(make_gateway: GatewayFactory, redis_url: str) -> AsyncIterator[Pair]:
    """`await pair(yaml)`: two gateways, each with its own client of the one Redis."""

    stores: list[Store] = []

    async def make(text: str) -> tuple[InProcessGateway, InProcessGateway]:
        stores.extend((RedisStore(redis_url, timeout=1.0), RedisStore(redis_url, timeout=1.0)))
        first = await make_gateway(text, store=stores[-2])
        second = await make_gateway(text, store=stores[-1])
        return first, second

    yield make
    for store in stores:
        await store.close()


OneGateway = Callable[[str], Awaitable[InProcessGateway]]


@pytest.fixture(params=["memory", "redis"])
async def gateway(
    request: pytest.FixtureRequest, make_gateway: GatewayFactory
) -> AsyncIterator[OneGateway]:
    """`await gateway(yaml)`: one gateway, on the embedded store and on Redis."""

    stores: list[Store] = []

    async def make(text: str) -> InProcessGateway:
        if request.param == "memory":
            stores.append(MemoryStore())
        else:
            stores.append(RedisStore(request.getfixturevalue("redis_url"), timeout=1.0))
        return await make_gateway(text, store=stores[-1])

    yield make
    for store in stores:
        await store.close()
