"""`PolicyContext.downstream(route)`: the rest of a route's chain after a policy, for requests
the policy makes itself (the queue's deliveries)."""

from __future__ import annotations

import pytest
from multidict import CIMultiDict

from gateway.http.messages import Request
from tests.conftest import GatewayFactory
from tests.support.upstream import Upstream

CONFIG = """
upstreams:
  backend: {targets: [UPSTREAM_URL]}
policies:
  once:
    rate_limit: {algorithm: sliding_window, limit: 1, window: 1m, key: route}
routes:
  - name: first
    match: {path: /first}
    upstream: backend
    policies: [once, {cache: {ttl: 60s}}]
  - name: second
    match: {path: /second}
    upstream: backend
    policies: [once]
"""


def _request(path: str, route: object) -> Request:
    return Request(
        method="GET",
        path=path,
        query_string="",
        headers=CIMultiDict(),
        client_ip="127.0.0.1",
        host="example",
        scheme="http",
        request_id="r1",
        route=route,  # type: ignore[arg-type]
        body=None,
    )


async def test_the_chain_after_a_policy_per_route(
    make_gateway: GatewayFactory, upstream: Upstream
) -> None:
    gateway = await make_gateway(CONFIG)
    once, cache = gateway.runtime.policies
    after_once = once.context.downstream("first")
    assert after_once.route.name == "first"
    for _ in range(3):  # the rate limit itself is behind: never 429; the cache is ahead
        response = await after_once.handler(_request("/first/x", after_once.route))
        await response.read()
        assert response.status == 200
    assert response.headers["X-Cache"] == "HIT"
    # A named definition shared by two routes: one rest of the chain for each.
    after_once_second = once.context.downstream("second")
    response = await after_once_second.handler(_request("/second/x", after_once_second.route))
    await response.read()
    assert "X-Cache" not in response.headers  # the proxy alone
    after_cache = cache.context.downstream("first").handler
    response = await after_cache(_request("/first/y", after_once.route))
    await response.read()
    assert (response.status, "X-Cache" in response.headers) == (200, False)
    assert upstream.hits["/first/x"] == 1
    with pytest.raises(LookupError):
        cache.context.downstream("second")
