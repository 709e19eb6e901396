"""`gateway.aiohttp.Policies` on Redis Cluster and Sentinel: the embedding opens the store of
its URL like the gateway does, and its policies keep working there (issue 16)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from gateway.aiohttp import Policies

Client = Callable[..., Awaitable[Any]]


async def test_policies_in_an_app_on_the_topology(aiohttp_client: Client, redis_url: str) -> None:
    limit = {"algorithm": "sliding_window", "limit": 2, "window": "1m", "key": "client_ip"}
    login = {"session": {"cookie": "sid", "forward": {"user_id": "X-User-Id"}}}
    policies = Policies(redis_url, {"per-client": {"rate_limit": limit}, "login": login})
    runs = []

    @policies.chain("catalog", "per-client", {"cache": {"ttl": "30s"}})
    async def catalog(request: web.Request) -> web.Response:
        runs.append(1)
        return web.json_response({"items": [1]})

    @policies.chain("account", "login")
    async def account(request: web.Request) -> web.Response:
        return web.json_response({"user": request.headers.get("X-User-Id")})

    app = web.Application()
    app.cleanup_ctx.append(policies.cleanup_ctx)
    app.router.add_get("/catalog", catalog)
    app.router.add_get("/account", account)
    client = await aiohttp_client(app)

    caches = [(await client.get("/catalog")).headers.get("X-Cache") for _ in range(2)]
    assert caches == ["MISS", "HIT"]
    assert runs == [1]
    assert (await client.get("/catalog")).status == 429

    sid = "t" * 24
    await client.app[policies.store_key].hset(f"session:{sid}", {"user_id": "7"}, ttl=60)
    answer = await client.get("/account", headers={"Cookie": f"sid={sid}", "X-User-Id": "1"})
    assert await answer.json() == {"user": "7"}
