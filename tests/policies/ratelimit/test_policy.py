"""The rate_limit policy through a real gateway: fields, 429 answers, keys, scopes, logs, metrics."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.store import Store
from gateway.store.memory import MemoryStore
from tests.conftest import GatewayFactory
from tests.support.upstream import Upstream

HEAD = """
upstreams:
  backend: {targets: [UPSTREAM_URL]}
"""


async def get(gw: Any, path: str = "/a", **kwargs: Any) -> tuple[int, dict[str, str], Any]:
    async with gw.request("GET", path, **kwargs) as response:
        body = await response.json() if response.content_type == "application/json" else None
        return response.status, dict(response.headers), body


async def statuses(gw: Any, count: int, path: str = "/a", **kwargs: Any) -> list[int]:
    return [(await get(gw, path, **kwargs))[0] for _ in range(count)]


async def test_admitted_answers_carry_the_exact_fields(
    make_gateway: GatewayFactory, store: Store, upstream: Upstream
) -> None:
    gw = await make_gateway(
        HEAD
        + """
policies:
  per-client:
    rate_limit: {algorithm: sliding_window, limit: 100, window: 1m, key: client_ip}
routes:
  - {name: api, match: {path: /a}, upstream: backend, policies: [per-client]}
""",
        store=store,
    )
    status, headers, _ = await get(gw)
    assert status == 200
    assert headers["RateLimit-Policy"] == '"per-client";q=100;w=60'
    assert headers["RateLimit"] == '"per-client";r=99;t=60'
    status, headers, _ = await get(gw)
    assert headers["RateLimit"] == '"per-client";r=98;t=60'
    assert upstream.hits["/a"] == 2


async def test_rejected_request_gets_429_with_retry_after_and_never_reaches_upstream(
    make_gateway: GatewayFactory, store: Store, upstream: Upstream
) -> None:
    gw = await make_gateway(
        HEAD
        + """
routes:
  - name: api
    match: {path: /a}
    upstream: backend
    policies:
      - rate_limit: {algorithm: sliding_window, limit: 2, window: 30s}
""",
        store=store,
    )
    assert await statuses(gw, 2) == [200, 200]
    status, headers, body = await get(gw)
    assert status == 429
    assert headers["Retry-After"] == "30"
    assert headers["RateLimit-Policy"] == '"rate_limit";q=2;w=30'
    assert headers["RateLimit"] == '"rate_limit";r=0;t=30'
    assert headers["Content-Type"] == "application/json"
    assert body == {
        "error": "rate_limited",
        "retry_after": 30,
        "request_id": headers["X-Request-ID"],
    }
    assert upstream.hits["/a"] == 2
    log = [line["rate_limit"] for line in gw.access_lines()]
    assert log == ["allowed", "allowed", "limited"]


async def test_token_bucket_fields_name_burst_and_refill_time(
    make_gateway: GatewayFactory,
) -> None:
    gw = await make_gateway(
        HEAD
        + """
routes:
  - name: api
    match: {path: /a}
    upstream: backend
    policies:
      - rate_limit: {algorithm: token_bucket, rate: 10/s, burst: 20, cost: 2}
"""
    )
    _, headers, _ = await get(gw)
    # 20 tokens refill completely in 2 s: q/w is the rate, q the burst.
    assert headers["RateLimit-Policy"] == '"rate_limit";q=20;w=2'
    assert headers["RateLimit"] == '"rate_limit";r=18;t=1'


async def test_several_limits_are_one_member_each_named_by_index_or_name(
    make_gateway: GatewayFactory,
) -> None:
    gw = await make_gateway(
        HEAD
        + """
policies:
  api:
    rate_limit:
      key: header.X-Api-Key
      limits:
        - {algorithm: token_bucket, rate: 10/s, burst: 20}
        - {algorithm: sliding_window, limit: 1000, window: 1h}
        - {algorithm: sliding_window, limit: 50000, window: 1d, approximate: true, name: daily}
routes:
  - {name: api, match: {path: /a}, upstream: backend, policies: [api]}
"""
    )
    _, headers, _ = await get(gw, headers={"X-Api-Key": "k1"})
    assert headers["RateLimit-Policy"] == (
        '"api.0";q=20;w=2, "api.1";q=1000;w=3600, "daily";q=50000;w=86400'
    )
    assert headers["RateLimit"].startswith(
        '"api.0";r=19;t=1, "api.1";r=999;t=3600, "daily";r=49999;t='
    )


async def test_client_ip_from_trusted_proxy_is_the_key(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(
        HEAD
        + """
trusted_proxies: [127.0.0.1/32]
routes:
  - name: api
    match: {path: /a}
    upstream: backend
    policies:
      - rate_limit: {algorithm: sliding_window, limit: 1, window: 1m}
"""
    )
    one = {"X-Forwarded-For": "203.0.113.1"}
    two = {"X-Forwarded-For": "203.0.113.2"}
    assert await statuses(gw, 2, headers=one) == [200, 429]
    assert await statuses(gw, 2, headers=two) == [200, 429]
    assert await statuses(gw, 1) == [200]  # the peer itself, 127.0.0.1


async def test_header_key_with_the_anonymous_bucket_for_requests_without_it(
    make_gateway: GatewayFactory,
) -> None:
    gw = await make_gateway(
        HEAD
        + """
routes:
  - name: api
    match: {path: /a}
    upstream: backend
    policies:
      - rate_limit: {algorithm: sliding_window, limit: 2, window: 1m, key: header.X-Api-Key}
"""
    )
    assert await statuses(gw, 3, headers={"X-Api-Key": "alice"}) == [200, 200, 429]
    assert await statuses(gw, 3, headers={"X-Api-Key": "bob"}) == [200, 200, 429]
    # Everyone without a key shares one bucket: limited, not crashed, not unlimited.
    assert await statuses(gw, 3) == [200, 200, 429]
    assert await statuses(gw, 1, headers={"X-Api-Key": "carol"}) == [200]


async def test_query_and_composite_keys(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(
        HEAD
        + """
routes:
  - name: api
    match: {path: /a}
    upstream: backend
    policies:
      - rate_limit: {algorithm: sliding_window, limit: 1, window: 1m, key: [query.token, header.X-Tenant]}
"""
    )
    assert await statuses(gw, 2, "/a?token=t1", headers={"X-Tenant": "a"}) == [200, 429]
    assert await statuses(gw, 2, "/a?token=t1", headers={"X-Tenant": "b"}) == [200, 429]
    assert await statuses(gw, 2, "/a?token=t2", headers={"X-Tenant": "a"}) == [200, 429]
    assert await statuses(gw, 2, "/a?token=t2") == [200, 429]
    assert await statuses(gw, 1, "/a") == [200]


async def test_session_field_key_after_the_session_policy(make_gateway: GatewayFactory) -> None:
    store = MemoryStore()
    await store.hset("session:" + "a" * 20, {"user_id": "42"})
    await store.hset("session:" + "b" * 20, {"user_id": "42"})  # same user, second device
    await store.hset("session:" + "c" * 20, {"user_id": "7"})
    gw = await make_gateway(
        HEAD
        + """
routes:
  - name: api
    match: {path: /a}
    upstream: backend
    policies:
      - session: {cookie: sid, optional: true}
      - rate_limit: {algorithm: sliding_window, limit: 2, window: 1m, key: session.user_id}
""",
        store=store,
    )

    def sid(letter: str) -> dict[str, str]:
        return {"Cookie": f"sid={letter * 20}"}

    assert await statuses(gw, 1, headers=sid("a")) == [200]
    assert await statuses(gw, 2, headers=sid("b")) == [200, 429]
    assert await statuses(gw, 3, headers=sid("c")) == [200, 200, 429]
    assert await statuses(gw, 3) == [200, 200, 429]  # anonymous: one shared bucket


async def test_named_definition_is_shared_and_inline_declarations_are_per_route(
    make_gateway: GatewayFactory, store: Store
) -> None:
    gw = await make_gateway(
        HEAD
        + """
policies:
  shared:
    rate_limit: {algorithm: sliding_window, limit: 3, window: 1m}
routes:
  - {name: one, match: {path: /one}, upstream: backend, policies: [shared]}
  - {name: two, match: {path: /two}, upstream: backend, policies: [shared]}
  - name: three
    match: {path: /three}
    upstream: backend
    policies: [{rate_limit: {algorithm: sliding_window, limit: 3, window: 1m}}]
  - name: four
    match: {path: /four}
    upstream: backend
    policies: [{rate_limit: {algorithm: sliding_window, limit: 3, window: 1m}}]
""",
        store=store,
    )
    assert await statuses(gw, 2, "/one") == [200, 200]
    assert await statuses(gw, 2, "/two") == [200, 429]
    assert await statuses(gw, 1, "/one") == [429]
    assert await statuses(gw, 4, "/three") == [200, 200, 200, 429]
    assert await statuses(gw, 4, "/four") == [200, 200, 200, 429]


async def test_route_key_counts_each_route_even_in_a_shared_definition(
    make_gateway: GatewayFactory,
) -> None:
    gw = await make_gateway(
        HEAD
        + """
policies:
  per-route:
    rate_limit: {algorithm: sliding_window, limit: 2, window: 1m, key: route}
routes:
  - {name: one, match: {path: /one}, upstream: backend, policies: [per-route]}
  - {name: two, match: {path: /two}, upstream: backend, policies: [per-route]}
"""
    )
    assert await statuses(gw, 3, "/one", headers={"X-Forwarded-For": "1.1.1.1"}) == [200, 200, 429]
    assert await statuses(gw, 3, "/two") == [200, 200, 429]


async def test_gateway_errors_after_admission_carry_the_fields(
    make_gateway: GatewayFactory,
) -> None:
    gw = await make_gateway(
        """
upstreams:
  dead: {targets: ["http://127.0.0.1:9"], timeouts: {connect: 1s}}
routes:
  - name: api
    match: {path: /a}
    upstream: dead
    policies:
      - rate_limit: {algorithm: sliding_window, limit: 5, window: 1m}
"""
    )
    status, headers, body = await get(gw)
    assert status == 502
    assert body["error"] == "bad_gateway"
    assert headers["RateLimit"] == '"rate_limit";r=4;t=60'


async def test_decisions_are_counted_by_route_policy_and_result(
    make_gateway: GatewayFactory,
) -> None:
    gw = await make_gateway(
        HEAD
        + """
policies:
  tight:
    rate_limit: {algorithm: sliding_window, limit: 1, window: 1m}
routes:
  - {name: api, match: {path: /a}, upstream: backend, policies: [tight]}
"""
    )
    assert await statuses(gw, 3) == [200, 429, 429]
    text = gw.metrics.exposition().decode()
    name = "gateway_rate_limit_decisions_total"
    assert f'{name}{{policy="tight",result="allowed",route="api"}} 1.0' in text
    assert f'{name}{{policy="tight",result="limited",route="api"}} 2.0' in text
    async with gw.admin("GET", "/-/routes") as response:
        routes = await response.json()
    assert routes["routes"][0]["policies"] == ["rate_limit tight: 1 per 60s by client_ip"]


@pytest.mark.parametrize("method", ["HEAD", "POST"])
async def test_every_method_of_the_route_counts(make_gateway: GatewayFactory, method: str) -> None:
    gw = await make_gateway(
        HEAD
        + """
routes:
  - name: api
    match: {path: /a}
    upstream: backend
    policies:
      - rate_limit: {algorithm: sliding_window, limit: 1, window: 1m}
"""
    )
    async with gw.request(method, "/a", data=b"x" if method == "POST" else None) as response:
        assert response.status == 200
        assert response.headers["RateLimit"] == '"rate_limit";r=0;t=60'
    async with gw.request(method, "/a") as response:
        assert response.status == 429
        assert response.headers["Retry-After"] == "60"
