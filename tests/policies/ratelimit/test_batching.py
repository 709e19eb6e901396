"""Concurrent requests of one key share one store call, decided as separate calls would be."""

from __future__ import annotations

import asyncio

from multidict import CIMultiDict

from gateway.http.messages import Request, Response
from gateway.store.redis import RedisStore
from policies.ratelimit.policy import RateLimited
from tests.conftest import GatewayFactory
from tests.support.redis_server import RedisServer

HEAD = """
upstreams:
  backend: {targets: [UPSTREAM_URL]}
"""


async def test_concurrent_requests_of_one_key_share_one_store_call(
    make_gateway: GatewayFactory, redis_store: RedisStore, redis_server: RedisServer
) -> None:
    gw = await make_gateway(
        HEAD
        + """
routes:
  - name: api
    match: {path: /a}
    upstream: backend
    policies:
      - rate_limit: {algorithm: sliding_window, limit: 5, window: 1m}
""",
        store=redis_store,
    )
    policy, route = gw.runtime.policies[0], gw.runtime.routes[0]

    def request(client: str) -> Request:
        return Request(
            method="GET",
            path="/a",
            query_string="",
            headers=CIMultiDict(),
            client_ip=client,
            host="localhost",
            scheme="http",
            request_id="r",
            route=route,
            body=None,
        )

    async def upstream_ok(_: Request) -> Response:
        return Response(200)

    redis_server.cli("CONFIG", "RESETSTAT")
    answers = await asyncio.gather(
        *(policy(request("192.0.2.1"), upstream_ok) for _ in range(8)),
        policy(request("192.0.2.2"), upstream_ok),
        return_exceptions=True,
    )
    calls = 0
    for line in redis_server.cli("INFO", "commandstats").splitlines():
        if line.startswith(("cmdstat_evalsha:", "cmdstat_eval:")):
            fields = dict(item.split("=") for item in line.partition(":")[2].split(","))
            # An EVALSHA answered NOSCRIPT (script not cached yet) is followed by an EVAL.
            calls += int(fields["calls"]) - int(fields["failed_calls"])
    # One call per identity, yet decided in arrival order as separate calls would have been.
    assert calls == 2
    admitted = [a for a in answers[:8] if isinstance(a, Response)]
    assert [a.headers["RateLimit"] for a in admitted] == [
        f'"rate_limit";r={left};t=60' for left in (4, 3, 2, 1, 0)
    ]
    rejected = answers[5:8]
    assert all(isinstance(a, RateLimited) and a.extra == {"retry_after": 60} for a in rejected)
    assert isinstance(answers[8], Response)
    assert answers[8].headers["RateLimit"] == '"rate_limit";r=4;t=60'
