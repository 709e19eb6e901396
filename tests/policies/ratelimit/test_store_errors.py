"""`on_store_error` with a Redis nobody answers for: within the store timeout, never a 500."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from gateway.store.redis import RedisStore
from tests.conftest import GatewayFactory
from tests.support.ports import free_port
from tests.support.upstream import Upstream

CONFIG = """
upstreams:
  backend: {targets: [UPSTREAM_URL]}
routes:
  - name: api
    match: {path: /a}
    upstream: backend
    policies:
      - rate_limit: {algorithm: sliding_window, limit: 1, window: 1m, on_store_error: MODE}
"""


@pytest.fixture
async def refused() -> AsyncIterator[RedisStore]:
    """A store whose Redis port has no listener: every connection is refused."""
    store = RedisStore(f"redis://127.0.0.1:{free_port()}/0", timeout=0.2)
    yield store
    await store.close()


@pytest.fixture
async def silent() -> AsyncIterator[RedisStore]:
    """A store whose 'Redis' accepts connections and never answers: every call times out."""
    held: list[asyncio.StreamWriter] = []

    async def accept(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    store = RedisStore(f"redis://127.0.0.1:{port}/0", timeout=0.2)
    yield store
    await store.close()
    for writer in held:
        writer.close()
    server.close()
    await server.wait_closed()


async def test_allow_lets_requests_through_without_fields(
    make_gateway: GatewayFactory, refused: RedisStore, upstream: Upstream
) -> None:
    gw = await make_gateway(CONFIG.replace("MODE", "allow"), store=refused)
    for _ in range(3):  # beyond the limit of 1: nothing is counted while the store is away
        async with gw.request("GET", "/a") as response:
            assert response.status == 200
            assert "RateLimit" not in response.headers
            assert "RateLimit-Policy" not in response.headers
    assert upstream.hits["/a"] == 3
    assert [line["rate_limit"] for line in gw.access_lines()] == ["store_error"] * 3
    text = gw.metrics.exposition().decode()
    assert (
        'gateway_rate_limit_decisions_total{policy="rate_limit",result="store_error",'
        'route="api"} 3.0'
    ) in text


async def test_deny_answers_503_with_retry_after(
    make_gateway: GatewayFactory, refused: RedisStore, upstream: Upstream
) -> None:
    gw = await make_gateway(CONFIG.replace("MODE", "deny"), store=refused)
    async with gw.request("GET", "/a") as response:
        assert response.status == 503
        assert response.headers["Retry-After"] == "1"
        body = await response.json()
    assert body == {
        "error": "rate_limit_unavailable",
        "request_id": response.headers["X-Request-ID"],
    }
    assert upstream.hits["/a"] == 0
    assert gw.access_lines()[0]["rate_limit"] == "store_error"


@pytest.mark.parametrize("mode", ["allow", "deny"])
async def test_a_silent_store_is_given_up_on_within_its_timeout(
    make_gateway: GatewayFactory, silent: RedisStore, mode: str
) -> None:
    gw = await make_gateway(CONFIG.replace("MODE", mode), store=silent)
    started = time.perf_counter()
    async with gw.request("GET", "/a") as response:
        assert response.status == (200 if mode == "allow" else 503)
    assert time.perf_counter() - started < 0.2 + 0.5
