"""Fixtures: a private redis-server, a real upstream, gateways on real sockets.

Nothing is mocked: Redis is a redis-server process this suite starts on a free loopback port
(flushed before each test that uses it), upstreams are aiohttp servers on loopback sockets.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import pytest
import uvloop

from gateway.store import Store
from gateway.store.memory import MemoryStore
from gateway.store.redis import RedisStore
from tests.support.harness import InProcessGateway, start_gateway
from tests.support.redis_server import RedisServer
from tests.support.upstream import Upstream


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> dict[str, Callable[[], object]]:
    # Production runs on uvloop; so do the tests.
    return {"uvloop": uvloop.new_event_loop}


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer().start()
    yield server
    server.cleanup()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    redis_server.cli("FLUSHALL")
    return redis_server.url


@pytest.fixture
async def redis_store(redis_url: str) -> AsyncIterator[RedisStore]:
    store = RedisStore(redis_url, timeout=1.0)
    yield store
    await store.close()


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[Store]:
    """Each contract test runs once on the embedded store and once on real Redis."""
    if request.param == "memory":
        memory = MemoryStore()
        yield memory
        await memory.close()
    else:
        server: RedisServer = request.getfixturevalue("redis_server")
        server.cli("FLUSHALL")
        redis = RedisStore(server.url, timeout=1.0)
        yield redis
        await redis.close()


@pytest.fixture
async def upstream(aiohttp_server: Callable[..., Awaitable[object]]) -> Upstream:
    backend = Upstream()
    # auto_decompress off: the upstream must see request bodies exactly as the gateway sent them.
    server = await aiohttp_server(backend.app(), auto_decompress=False)
    backend.url = str(server.make_url("")).rstrip("/")  # type: ignore[attr-defined]
    return backend


GatewayFactory = Callable[..., Awaitable[InProcessGateway]]


@pytest.fixture
async def make_gateway(upstream: Upstream) -> AsyncIterator[GatewayFactory]:
    """`await make_gateway(yaml_text, store=...)`: `UPSTREAM_URL` in the YAML is the upstream."""
    started: list[InProcessGateway] = []

    async def make(text: str, store: Store | None = None) -> InProcessGateway:
        gateway = await start_gateway(text, upstream.url, store)
        started.append(gateway)
        return gateway

    yield make
    for gateway in started:
        await gateway.close()
