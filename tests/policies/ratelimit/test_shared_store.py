"""Exactness under concurrency: gateways with their own connection pools sharing one Redis."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from gateway.store import Store
from gateway.store.redis import RedisStore
from tests.conftest import GatewayFactory

HEAD = """
upstreams:
  backend: {targets: [UPSTREAM_URL]}
routes:
  - name: api
    match: {path: /a}
    upstream: backend
    policies:
"""

StoreFactory = Callable[[], RedisStore]


@pytest.fixture
async def redis_stores(redis_url: str) -> AsyncIterator[StoreFactory]:
    """`make()` gives a new RedisStore: its own client and pool, like another process."""
    made: list[RedisStore] = []

    def make() -> RedisStore:
        made.append(RedisStore(redis_url, timeout=2.0))
        return made[-1]

    yield make
    for store in made:
        await store.close()


async def burst(gateways: list[Any], count: int, **kwargs: Any) -> Counter[int]:
    """`count` requests at once, spread over `gateways` in turn."""

    async def one(i: int) -> int:
        async with gateways[i % len(gateways)].request("GET", "/a", **kwargs) as response:
            await response.read()
            if response.status == 429:
                assert int(response.headers["Retry-After"]) >= 1
            return int(response.status)

    return Counter(await asyncio.gather(*(one(i) for i in range(count))))


async def test_two_gateways_admit_exactly_the_limit_of_120_concurrent(
    make_gateway: GatewayFactory, redis_stores: StoreFactory
) -> None:
    config = HEAD + (
        "      - rate_limit: {algorithm: sliding_window, limit: 20, window: 30s, key: header.X-Client}\n"
    )
    gateways = [await make_gateway(config, store=redis_stores()) for _ in range(2)]
    for client in ("alice", "bob", "carol"):  # every time, each with a fresh bucket
        counts = await burst(gateways, 120, headers={"X-Client": client})
        assert counts == Counter({200: 20, 429: 100}), client
    # Both gateways took part, each deciding through its own pool (which of them got the
    # places is a matter of timing, so only the totals are exact).
    decisions = Counter()
    for gw in gateways:
        seen = Counter(line["rate_limit"] for line in gw.access_lines())
        assert sum(seen.values()) == 180  # every request of this gateway was decided
        decisions += seen
    assert decisions == Counter({"allowed": 60, "limited": 300})


async def test_token_bucket_burst_of_30_concurrent_then_refill_at_the_rate(
    make_gateway: GatewayFactory, redis_stores: StoreFactory
) -> None:
    config = HEAD + "      - rate_limit: {algorithm: token_bucket, rate: 1/s, burst: 5}\n"
    gateways = [await make_gateway(config, store=redis_stores()) for _ in range(2)]
    assert await burst(gateways, 30) == Counter({200: 5, 429: 25})
    for _ in range(2):
        # One token a second: a little more than one interval later, exactly one is there.
        await asyncio.sleep(1.05)
        assert await burst(gateways, 6) == Counter({200: 1, 429: 5})


async def test_several_limits_admit_by_the_tightest_and_consume_only_when_all_admit(
    make_gateway: GatewayFactory, store: Store
) -> None:
    config = HEAD + (
        "      - rate_limit:\n"
        "          limits:\n"
        "            - {algorithm: sliding_window, limit: 3, window: 2s}\n"
        "            - {algorithm: sliding_window, limit: 5, window: 1h}\n"
    )
    gw = await make_gateway(config, store=store)

    async def statuses() -> list[int]:
        out = []
        for _ in range(4):
            async with gw.request("GET", "/a") as response:
                out.append(response.status)
        return out

    assert await statuses() == [200, 200, 200, 429]
    await asyncio.sleep(2.2)  # the 2 s window passing is the behaviour under test
    assert await statuses() == [200, 200, 429, 429]
    async with gw.request("GET", "/a") as response:
        # The hourly limit is spent (5 admitted, rejected requests not counted) and frees a
        # place when the first admission is an hour old.
        first, hourly = response.headers["RateLimit"].split(", ")
        assert first.startswith('"rate_limit.0";r=1;t=')
        assert hourly.startswith('"rate_limit.1";r=0;t=')
        left = int(hourly.rpartition("=")[2])
        assert 3590 < left <= 3598
        assert response.headers["Retry-After"] == str(left)
