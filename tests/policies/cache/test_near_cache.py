"""The in-process near cache: hits without a Redis call, dropped everywhere within 100 ms."""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter

import redis.asyncio as aioredis
from aiohttp import web

from gateway.store.redis import RedisStore
from tests.conftest import GatewayFactory
from tests.policies.cache.conftest import PROPAGATION, config, eventually, fetch
from tests.support.harness import InProcessGateway
from tests.support.upstream import Upstream


class Counted:
    """Two gateways whose store calls are counted per operation."""

    def __init__(self, redis_url: str) -> None:
        self.calls: list[Counter[str]] = [Counter(), Counter()]
        self.stores = [
            RedisStore(redis_url, timeout=1.0, observer=self._observer(n)) for n in range(2)
        ]

    def _observer(self, n: int):  # type: ignore[no-untyped-def]
        def observe(op: str, seconds: float, failed: bool) -> None:
            self.calls[n][op] += 1

        return observe

    async def start(
        self, make_gateway: GatewayFactory, text: str
    ) -> tuple[InProcessGateway, InProcessGateway]:
        return (
            await make_gateway(text, store=self.stores[0]),
            await make_gateway(text, store=self.stores[1]),
        )

    async def close(self) -> None:
        for store in self.stores:
            await store.close()


def versions(upstream: Upstream, path: str) -> None:
    counter = itertools.count(1)

    async def handler(_: web.Request) -> web.Response:
        return web.Response(text=f"v{next(counter)}", headers={"Cache-Control": "max-age=60"})

    upstream.route(path, handler)


async def test_hot_hits_skip_redis(
    make_gateway: GatewayFactory, upstream: Upstream, redis_url: str
) -> None:
    versions(upstream, "/n")
    counted = Counted(redis_url)
    try:
        a, b = await counted.start(make_gateway, config("ttl: 1s"))
        assert (await fetch(a, "/n")).cache == "MISS"
        assert (await fetch(b, "/n")).cache == "HIT"  # from Redis, kept near
        lookups = counted.calls[1]["lookup"]
        for _ in range(5):
            hit = await fetch(b, "/n")
            assert (hit.cache, hit.text) == ("HIT", "v1")
        assert counted.calls[1]["lookup"] == lookups
        assert "Age" in hit.headers
    finally:
        await counted.close()


async def test_a_purge_anywhere_drops_near_copies_within_100ms(
    make_gateway: GatewayFactory, upstream: Upstream, redis_url: str
) -> None:
    versions(upstream, "/n")
    counted = Counted(redis_url)
    try:
        a, b = await counted.start(make_gateway, config("ttl: 1s"))
        await fetch(a, "/n")
        await fetch(b, "/n")
        await fetch(b, "/n")
        async with a.admin("POST", "/-/cache/purge", json={"path": "/n"}) as response:
            assert (await response.json()) == {"purged": 1}
        await asyncio.sleep(PROPAGATION)
        after = await fetch(b, "/n")
        assert (after.cache, after.text) == ("MISS", "v2")
    finally:
        await counted.close()


async def test_a_write_or_refresh_anywhere_drops_near_copies(
    make_gateway: GatewayFactory, upstream: Upstream, redis_url: str
) -> None:
    versions(upstream, "/w")
    counted = Counted(redis_url)
    try:
        a, b = await counted.start(make_gateway, config("ttl: 1s"))
        await fetch(a, "/w")
        await fetch(b, "/w")
        await fetch(a, "/w")  # both hold it near now
        await fetch(a, "/w", method="PUT", data=b"new")  # invalidates: v2 is the PUT's answer
        await asyncio.sleep(PROPAGATION)
        refetched = await fetch(b, "/w")
        assert (refetched.cache, refetched.text) == ("MISS", "v3")
        await asyncio.sleep(PROPAGATION)
        # b stored v3: a's near copy of v1 must be gone too.
        assert (await fetch(a, "/w")).text == "v3"
    finally:
        await counted.close()


async def test_a_pubsub_reconnect_empties_the_near_cache(
    make_gateway: GatewayFactory, upstream: Upstream, redis_url: str
) -> None:
    versions(upstream, "/r")
    counted = Counted(redis_url)
    try:
        a, b = await counted.start(make_gateway, config("ttl: 1s"))
        await fetch(a, "/r")
        await fetch(b, "/r")
        lookups = counted.calls[1]["lookup"]
        await fetch(b, "/r")
        assert counted.calls[1]["lookup"] == lookups  # near
        admin = aioredis.Redis.from_url(redis_url)
        try:
            killed = await admin.execute_command(  # type: ignore[no-untyped-call]
                "CLIENT", "KILL", "TYPE", "pubsub"
            )
            assert killed >= 2
        finally:
            await admin.aclose()

        async def looked_up_again() -> bool:
            await fetch(b, "/r")
            return counted.calls[1]["lookup"] > lookups

        await eventually(looked_up_again, timeout=2)
    finally:
        await counted.close()


async def test_no_near_cache_on_request(
    make_gateway: GatewayFactory, upstream: Upstream, redis_url: str
) -> None:
    versions(upstream, "/off")
    counted = Counted(redis_url)
    try:
        _, b = await counted.start(make_gateway, config("ttl: 1s, near_cache: 0"))
        await fetch(b, "/off")
        before = counted.calls[1]["lookup"]
        for _ in range(3):
            assert (await fetch(b, "/off")).cache == "HIT"
        assert counted.calls[1]["lookup"] == before + 3
    finally:
        await counted.close()


async def test_a_hit_on_a_varying_uri_is_one_store_call_even_the_first_time(
    make_gateway: GatewayFactory, upstream: Upstream, redis_url: str
) -> None:
    async def negotiated(request: web.Request) -> web.Response:
        headers = {"Cache-Control": "max-age=60", "Vary": "Accept-Language"}
        return web.Response(text=request.headers.get("Accept-Language", "-"), headers=headers)

    upstream.route("/v", negotiated)
    counted = Counted(redis_url)
    try:
        a, b = await counted.start(make_gateway, config("ttl: 1s, near_cache: 0"))
        await fetch(a, "/v", headers={"Accept-Language": "de"})
        before = counted.calls[1]["lookup"]
        hit = await fetch(b, "/v", headers={"Accept-Language": "de"})  # b never saw /v
        assert (hit.cache, hit.text) == ("HIT", "de")
        assert counted.calls[1]["lookup"] == before + 1
    finally:
        await counted.close()


async def test_per_user_copies_are_held_near_and_kept_apart(
    make_gateway: GatewayFactory, upstream: Upstream, redis_url: str
) -> None:
    async def personal(request: web.Request) -> web.Response:
        user = request.headers.get("X-User-Id", "anonymous")
        return web.Response(text=f"page of {user}", headers={"Cache-Control": "max-age=60"})

    upstream.route("/home", personal)
    text = """
upstreams:
  backend: {targets: [UPSTREAM_URL]}
routes:
  - name: site
    match: {path: /}
    upstream: backend
    policies:
      - session: {bearer: true, forward: {user_id: X-User-Id}}
      - cache: {ttl: 60s, vary_session: [user_id]}
"""
    counted = Counted(redis_url)
    try:
        _, b = await counted.start(make_gateway, text)
        users = {"1" * 20: "1", "2" * 20: "2"}
        for sid, user in users.items():
            await counted.stores[1].hset(f"session:{sid}", {"user_id": user}, ttl=60)
        for sid in users:
            await fetch(b, "/home", headers={"Authorization": f"Bearer {sid}"})
            await fetch(b, "/home", headers={"Authorization": f"Bearer {sid}"})
        lookups = counted.calls[1]["lookup"]
        for sid, user in users.items():
            hit = await fetch(b, "/home", headers={"Authorization": f"Bearer {sid}"})
            assert (hit.cache, hit.text) == ("HIT", f"page of {user}")
        assert counted.calls[1]["lookup"] == lookups
    finally:
        await counted.close()
