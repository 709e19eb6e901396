"""When Redis fails the cache steps aside: the upstream answers, `X-Cache: BYPASS`."""

from __future__ import annotations

from aiohttp import web

from gateway.store.redis import RedisStore
from tests.conftest import GatewayFactory
from tests.policies.cache.conftest import config, eventually, fetch
from tests.support.ports import free_port
from tests.support.redis_server import RedisServer
from tests.support.upstream import Upstream


def cacheable(upstream: Upstream, path: str) -> None:
    async def handler(_: web.Request) -> web.Response:
        return web.Response(text="from upstream", headers={"Cache-Control": "max-age=60"})

    upstream.route(path, handler)


async def test_no_redis_at_all_means_bypass(
    make_gateway: GatewayFactory, upstream: Upstream
) -> None:
    cacheable(upstream, "/a")
    store = RedisStore(f"redis://127.0.0.1:{free_port()}/0", timeout=0.2)
    try:
        gw = await make_gateway(config("ttl: 60s"), store=store)
        for _ in range(7):  # past the circuit breaker's threshold too
            answer = await fetch(gw, "/a")
            assert (answer.status, answer.cache, answer.text) == (200, "BYPASS", "from upstream")
        posted = await fetch(gw, "/a", method="POST", data=b"x")
        assert (posted.status, posted.cache) == (200, "BYPASS")
        async with gw.admin("POST", "/-/cache/purge", json={"route": "site"}) as response:
            assert response.status == 503
        assert upstream.hits["/a"] == 8
    finally:
        await store.close()


async def test_redis_lost_and_back(make_gateway: GatewayFactory, upstream: Upstream) -> None:
    cacheable(upstream, "/b")
    server = RedisServer().start()
    store = RedisStore(server.url, timeout=0.2)
    try:
        gw = await make_gateway(config("ttl: 60s"), store=store)
        assert (await fetch(gw, "/b")).cache == "MISS"
        assert (await fetch(gw, "/b")).cache == "HIT"  # and now in the near cache too
        server.kill()

        async def bypassed() -> bool:
            return (await fetch(gw, "/b")).cache == "BYPASS"

        # Pub/sub dies with Redis, and once that is noticed (at once, on a local socket) the
        # near cache no longer answers on its own either.
        await eventually(bypassed, timeout=1)
        for _ in range(3):
            answer = await fetch(gw, "/b")
            assert (answer.status, answer.cache) == (200, "BYPASS")
        server = RedisServer(port=server.port).start()

        async def cached_again() -> bool:
            return (await fetch(gw, "/b")).cache == "HIT"

        await eventually(cached_again, timeout=15)
    finally:
        await store.close()
        server.cleanup()


async def test_store_answering_slowly_is_bypassed(
    make_gateway: GatewayFactory, upstream: Upstream
) -> None:
    cacheable(upstream, "/c")
    server = RedisServer().start()
    store = RedisStore(server.url, timeout=0.2)
    try:
        gw = await make_gateway(config("ttl: 60s, near_cache: 0"), store=store)
        assert (await fetch(gw, "/c")).cache == "MISS"
        assert server.cli("CLIENT", "PAUSE", "1000", "ALL") == "OK"  # every call now hangs
        answer = await fetch(gw, "/c")
        assert (answer.status, answer.cache, answer.text) == (200, "BYPASS", "from upstream")
    finally:
        await store.close()
        server.cleanup()
