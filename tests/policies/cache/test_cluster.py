"""On Redis Cluster: every script call stays in one slot (hash tags), two gateways agree."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterator

import pytest
from aiohttp import web

from gateway.store.redis import RedisStore
from policies.cache.store import CacheStore, Index, uri_key
from tests.conftest import GatewayFactory
from tests.policies.cache.conftest import PROPAGATION, config, fetch
from tests.support.redis_cluster import RedisClusterGroup
from tests.support.upstream import Upstream

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def cluster_url() -> Iterator[str]:
    if shutil.which("redis-cli") is None:
        pytest.skip("redis-cli is not installed")
    group = RedisClusterGroup().start()
    yield group.url
    group.cleanup()


async def test_scripts_touch_one_slot_per_call(cluster_url: str) -> None:
    store = RedisStore(cluster_url, timeout=2.0)
    try:
        cache = CacheStore(store)
        index = Index("route:r", "r")
        for n in range(20):  # URIs spread over the three masters
            uri = uri_key("route:r", "r", "h", f"/p/{n}", "")
            found = await cache.lookup(uri, "", "-", lock=True, token="t", lock_ms=5000)
            assert found.state == "L"
            stored = await cache.put(
                uri,
                vary="",
                variant="-",
                blob=b"E",
                retention_ms=60_000,
                lock_key=uri.lock("-"),
                token="t",
                max_variants=4,
                fill_start_us=found.now_us,
            )
            assert stored > 0
            assert await cache.refresh_lock(uri, "-", stored, "r", 5000) == ("L", 0)
            await cache.release(uri.lock("-"), uri, "r", pass_ms=10)
            await cache.index_add(index, uri, stored + 60_000)
            hit = await cache.lookup(uri, "", "-", lock=True, token="t", lock_ms=5000)
            assert hit.blob == b"E"
        members = await cache.index_range(index, b"[/p/", b"[/p/\xff", 100)
        assert len(members) == 20
        assert await cache.invalidate(uri_key("route:r", "r", "h", "/p/3", ""), 1000) == 1
        await cache.index_remove(index, members)
        assert await cache.index_range(index, b"-", b"+", 100) == []
    finally:
        await store.close()


async def test_two_gateways_share_a_cluster(
    make_gateway: GatewayFactory, upstream: Upstream, cluster_url: str
) -> None:
    async def slow(_: web.Request) -> web.Response:
        await asyncio.sleep(0.2)
        return web.Response(text="clustered", headers={"Cache-Control": "max-age=60"})

    upstream.route("/c", slow)
    stores = [RedisStore(cluster_url, timeout=2.0) for _ in range(2)]
    try:
        a = await make_gateway(config("ttl: 1s"), store=stores[0])
        b = await make_gateway(config("ttl: 1s"), store=stores[1])
        answers = await asyncio.gather(*(fetch((a, b)[n % 2], "/c") for n in range(10)))
        assert sorted(x.cache or "" for x in answers) == ["HIT"] * 9 + ["MISS"]
        assert upstream.hits["/c"] == 1
        async with a.admin("POST", "/-/cache/purge", json={"prefix": "/"}) as response:
            assert await response.json() == {"purged": 1}
        await asyncio.sleep(PROPAGATION)
        assert (await fetch(b, "/c")).cache == "MISS"
        await fetch(a, "/c", method="DELETE")
        await asyncio.sleep(PROPAGATION)
        assert (await fetch(b, "/c")).cache == "MISS"
    finally:
        for store in stores:
            await store.close()
