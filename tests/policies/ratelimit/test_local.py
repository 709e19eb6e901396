"""`on_store_error: local`: while the store is unreachable each gateway enforces limit / N.

A private redis-server per test, killed (SIGKILL: calls refused, the breaker opens) or stopped
(SIGSTOP: calls past their deadline) under real gateways: the local share for both algorithms
and a chain of limits, its RateLimit fields, metrics and log, the way back to the store, and
N from the heartbeat of a second gateway process (a real `gateway run`) on the same Redis.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest

from gateway.store.memory import MemoryStore
from gateway.store.redis import RedisStore
from policies.ratelimit.config import RateLimitOptions
from policies.ratelimit.local import scaled
from policies.ratelimit.policy import RateLimit
from tests.conftest import GatewayFactory
from tests.support.harness import GatewayProcess, InProcessGateway
from tests.support.polling import eventually
from tests.support.ports import free_port
from tests.support.redis_server import RedisServer
from tests.support.upstream import Upstream

ROUTES = """
upstreams:
  backend: {targets: [UPSTREAM_URL]}
routes:
  - name: api
    match: {path: /a}
    upstream: backend
    policies:
      - rate_limit: POLICY
"""
WINDOW = "{algorithm: sliding_window, limit: 10, window: 1m, on_store_error: local, SHARE}"


def config(policy: str, share: str = "local_share: 2") -> str:
    return ROUTES.replace("POLICY", policy.replace(", SHARE", f", {share}" if share else ""))


@pytest.fixture
def redis() -> Iterator[RedisServer]:
    """A redis-server of this test alone, which the test kills, stops and restarts."""
    server = RedisServer().start()
    yield server
    if server.process is not None:
        server.process.send_signal(signal.SIGCONT)  # a stopped one must be able to terminate
    server.cleanup()


@pytest.fixture
async def live(redis: RedisServer) -> AsyncIterator[RedisStore]:
    """A store on that Redis (closed after the gateways using it)."""
    store = RedisStore(redis.url, timeout=0.2)
    yield store
    await store.close()


async def answers(gw: InProcessGateway, count: int) -> list[tuple[int, str, str, str]]:
    """(status, RateLimit-Policy, RateLimit, Retry-After) of `count` requests in a row."""
    out = []
    for _ in range(count):
        async with gw.request("GET", "/a") as response:
            headers = response.headers
            out.append(
                (
                    response.status,
                    headers.get("RateLimit-Policy", ""),
                    headers.get("RateLimit", ""),
                    headers.get("Retry-After", ""),
                )
            )
            if response.status == 429:
                assert (await response.json())["error"] == "rate_limited"
    return out


async def statuses(gw: InProcessGateway, count: int) -> list[int]:
    return [answer[0] for answer in await answers(gw, count)]


def policy_of(gw: InProcessGateway) -> RateLimit:
    (policy,) = [p for p in gw.runtime.policies if isinstance(p, RateLimit)]
    return policy


def decisions(gw: InProcessGateway, result: str) -> str:
    return (
        f'gateway_rate_limit_decisions_total{{policy="rate_limit",result="{result}",route="api"}}'
    )


async def back_on_the_store(gw: InProcessGateway, within: float) -> tuple[float, tuple]:
    """Requests until one is decided by the store again; (seconds it took, its answer)."""
    started = time.perf_counter()
    while time.perf_counter() - started < within:
        (answer,) = await answers(gw, 1)
        if gw.access_lines()[-1]["rate_limit"] in ("allowed", "limited"):
            return time.perf_counter() - started, answer
        # Each request is itself the probe: the breaker lets one through every so often.
        await asyncio.sleep(0.02)
    raise AssertionError(f"still local {within}s after the store came back")


async def test_a_killed_redis_leaves_each_gateway_its_share_until_it_is_back(
    live: RedisStore, make_gateway: GatewayFactory, redis: RedisServer, upstream: Upstream
) -> None:
    gw = await make_gateway(config(WINDOW), store=live)
    store_policy = '"rate_limit";q=10;w=60'
    assert await answers(gw, 2) == [
        (200, store_policy, f'"rate_limit";r={left};t=60', "") for left in (9, 8)
    ]
    redis.kill()
    local_policy = '"rate_limit";q=5;w=60'  # 10 shared by local_share 2
    assert (
        await answers(gw, 7)
        == [(200, local_policy, f'"rate_limit";r={left};t=60', "") for left in (4, 3, 2, 1, 0)]
        + [(429, local_policy, '"rate_limit";r=0;t=60', "60")] * 2
    )
    assert upstream.hits["/a"] == 2 + 5
    logged = [line["rate_limit"] for line in gw.access_lines()]
    assert logged == ["allowed"] * 2 + ["local_allowed"] * 5 + ["local_limited"] * 2
    text = gw.metrics.exposition().decode()
    assert f"{decisions(gw, 'local_allowed')} 5.0" in text
    assert f"{decisions(gw, 'local_limited')} 2.0" in text
    assert f"{decisions(gw, 'store_error')} 0.0" in text  # a local decision counts as such
    async with gw.admin("GET", "/-/stats") as response:
        assert (await response.json())["routes"]["api"]["rate_limited"] == 2  # local refusals

    redis.start()  # same port, empty: it lost the 2 admissions it had counted
    took, answer = await back_on_the_store(gw, within=5.0)
    # The store's first answer knows nothing of the 5 local admissions: 1 of 10 used, not 6.
    assert answer == (200, store_policy, '"rate_limit";r=9;t=60', "")
    assert took < 5.0
    assert await statuses(gw, 10) == [200] * 9 + [429]
    assert gw.access_lines()[-1]["rate_limit"] == "limited"


async def test_a_redis_past_its_deadline_is_replaced_by_the_local_count(
    live: RedisStore, make_gateway: GatewayFactory, redis: RedisServer
) -> None:
    policy = (
        "{algorithm: sliding_window, approximate: true, limit: 6, window: 1m,"
        " on_store_error: local, local_share: 3}"
    )
    gw = await make_gateway(config(policy, ""), store=live)
    assert await statuses(gw, 1) == [200]
    assert redis.process is not None
    redis.process.send_signal(signal.SIGSTOP)  # connections stay open; nothing answers
    started = time.perf_counter()
    assert await statuses(gw, 3) == [200, 200, 429]  # 6 // 3, counted here
    # No call waits past the store's timeout (0.2s) before the local decision.
    assert time.perf_counter() - started < 3 * 0.2 + 2.0
    assert [line["rate_limit"] for line in gw.access_lines()[1:]] == [
        "local_allowed",
        "local_allowed",
        "local_limited",
    ]
    redis.process.send_signal(signal.SIGCONT)
    _, answer = await back_on_the_store(gw, within=5.0)
    assert answer[1] == '"rate_limit";q=6;w=60'  # the store's limit, not the share


async def test_token_bucket_gets_its_share_of_the_burst_and_of_the_rate(
    live: RedisStore, make_gateway: GatewayFactory, redis: RedisServer
) -> None:
    policy = "{algorithm: token_bucket, rate: 2/s, burst: 4, on_store_error: local, local_share: 2}"
    gw = await make_gateway(config(policy, ""), store=live)
    redis.kill()
    started = time.perf_counter()
    # burst 2 refilled at 1/s: whole again in 2s, the next token within a second.
    half = '"rate_limit";q=2;w=2'
    assert await answers(gw, 3) == [
        (200, half, '"rate_limit";r=1;t=1', ""),
        (200, half, '"rate_limit";r=0;t=1', ""),
        (429, half, '"rate_limit";r=0;t=1', "1"),
    ]
    # At 1/s (not 2/s) the next token comes a second after the first two were taken: the
    # refill is time passing, so time is what is polled.
    while await statuses(gw, 1) != [200]:
        assert time.perf_counter() - started < 3.0
        await asyncio.sleep(0.02)
    assert time.perf_counter() - started > 0.75


async def test_a_chain_of_limits_is_scaled_limit_by_limit(
    live: RedisStore, make_gateway: GatewayFactory, redis: RedisServer
) -> None:
    policy = """
          on_store_error: local
          local_share: 2
          limits:
            - {algorithm: sliding_window, limit: 4, window: 1m, name: minute}
            - {algorithm: token_bucket, rate: 1/s, burst: 10, name: burst}"""
    gw = await make_gateway(config(policy, ""), store=live)
    redis.kill()
    # 4 // 2 per minute; the bucket: burst 5 at 0.5/s, so full again in 10s.
    fields = '"minute";q=2;w=60, "burst";q=5;w=10'
    assert await answers(gw, 3) == [
        (200, fields, '"minute";r=1;t=60, "burst";r=4;t=2', ""),
        (200, fields, '"minute";r=0;t=60, "burst";r=3;t=2', ""),
        # Refused by the window, the bucket keeps its tokens: a refusal counts against none.
        (429, fields, '"minute";r=0;t=60, "burst";r=3;t=2', "60"),
    ]


async def test_n_follows_a_second_gateway_process_on_the_store(
    live: RedisStore,
    make_gateway: GatewayFactory,
    redis: RedisServer,
    upstream: Upstream,
    tmp_path: Path,
) -> None:
    first = await make_gateway(config(WINDOW, ""), store=live)
    local = policy_of(first)._local
    assert local is not None
    await eventually(lambda: redis.cli("ZCARD", "gw:v1:{processes}") == "1", "the first beat")
    assert local.share == 1
    port, admin = free_port(), free_port()
    path = tmp_path / "gateway.yaml"
    path.write_text(
        f"listen: 127.0.0.1:{port}\nworkers: 1\nadmin: {{listen: 127.0.0.1:{admin}}}\n"
        f"redis: {{url: '{redis.url}', timeout: 200ms}}\n"
        + config(WINDOW, "").replace("UPSTREAM_URL", upstream.url)
    )
    second = await GatewayProcess(str(path)).start()
    try:
        # The scale-up shows in the first gateway's next beat (every 2s).
        await eventually(lambda: local.share == 2, "the first gateway to count 2", checks=200)
        assert redis.cli("ZCARD", "gw:v1:{processes}") == "2"
        redis.kill()
        half = '"rate_limit";q=5;w=60'
        assert await answers(first, 6) == [
            (200, half, f'"rate_limit";r={left};t=60', "") for left in (4, 3, 2, 1, 0)
        ] + [(429, half, '"rate_limit";r=0;t=60', "60")]
        # The worker of `gateway run` saw the same two processes.
        async with aiohttp.ClientSession() as session:
            seen = []
            for _ in range(6):
                async with session.get(f"http://127.0.0.1:{port}/a") as response:
                    seen.append((response.status, response.headers.get("RateLimit-Policy")))
        assert seen == [(200, half)] * 5 + [(429, half)]
    finally:
        assert await second.stop() == 0
    assert "Traceback" not in second.stderr, second.stderr


async def test_the_description_names_the_local_share(
    live: RedisStore, make_gateway: GatewayFactory
) -> None:
    fixed = await make_gateway(config(WINDOW), store=live)
    assert policy_of(fixed).describe() == (
        "rate_limit rate_limit: 10 per 60s by client_ip; store down: limits / 2 per process"
    )
    counted = await make_gateway(config(WINDOW, ""), store=live)
    assert (
        policy_of(counted)
        .describe()
        .endswith("; store down: limits / N (the processes on the store) per process")
    )


async def test_stop_ends_the_heartbeat(
    live: RedisStore, make_gateway: GatewayFactory, redis: RedisServer
) -> None:
    gw = await make_gateway(config(WINDOW, ""), store=live)
    policy = policy_of(gw)
    await eventually(lambda: redis.cli("EXISTS", "gw:v1:{processes}") == "1", "a beat")
    beating = policy._beating
    assert beating is not None
    assert not beating.done()
    await policy.stop()
    assert beating.cancelled()


async def test_a_fixed_share_sends_no_heartbeat(
    live: RedisStore, make_gateway: GatewayFactory, redis: RedisServer
) -> None:
    gw = await make_gateway(config(WINDOW), store=live)
    assert await statuses(gw, 1) == [200]  # the store answered, so it would have seen a beat
    assert policy_of(gw)._beating is None
    assert redis.cli("EXISTS", "gw:v1:{processes}") == "0"


async def test_on_memory_the_store_itself_is_local(make_gateway: GatewayFactory) -> None:
    store = MemoryStore()
    gw = await make_gateway(config(WINDOW, ""), store=store)
    policy = policy_of(gw)
    assert policy._local is None
    assert policy._beating is None
    assert await statuses(gw, 11) == [200] * 10 + [429]  # the whole limit: one process
    assert [line["rate_limit"] for line in gw.access_lines()][-1] == "limited"
    await store.close()


def test_scaling_never_goes_below_one_request() -> None:
    window = RateLimitOptions.model_validate(
        {"algorithm": "sliding_window", "limit": 3, "window": 60}
    )
    assert scaled(window, 2).limit == 1
    assert scaled(window, 5).limit == 1
    assert scaled(window, 1) is window
    bucket = RateLimitOptions.model_validate(
        {"algorithm": "token_bucket", "rate": "10/s", "burst": 9, "cost": 3}
    )
    half = scaled(bucket, 2)
    assert (half.burst, half.rate.per_second if half.rate else None) == (4, 5.0)
    assert scaled(bucket, 4).burst == 3  # never below the cost: a request must fit
