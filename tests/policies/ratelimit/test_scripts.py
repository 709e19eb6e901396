"""`rate_limit.lua` on a real redis-server and its Python twin on `memory://`: same answers.

Each contract test runs on both stores (the `store` fixture); a few look at Redis-only
behaviour (SCRIPT FLUSH, two requests in one microsecond) with the real server.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, cast

import redis.asyncio as aioredis
from hypothesis import given, settings
from hypothesis import strategies as st
from redis.crc import key_slot

from gateway.store import Store
from gateway.store.memory import MemoryKeyspace
from gateway.store.redis import RedisStore
from policies.ratelimit.keys import SHARDS, PolicyKeys, board
from policies.ratelimit.scripts import (
    APPROXIMATE,
    BUCKET,
    SLIDING,
    check_local,
    rate_limit_script,
)
from tests.policies.ratelimit.conftest import Peek
from tests.support.redis_server import RedisServer

SCRIPT = rate_limit_script()
KEYS = PolicyKeys("route:test", ("0:x", "1:y", "2:z")).bucket_keys("client")[1]


def sliding(limit: int, window: float) -> tuple[int, ...]:
    return (SLIDING, limit, round(window * 1_000_000), 0)


def approximate(limit: int, window: float) -> tuple[int, ...]:
    return (APPROXIMATE, limit, round(window * 1_000_000), 0)


def bucket(per_second: float, burst: int, cost: int = 1) -> tuple[int, ...]:
    return (BUCKET, round(1_000_000 / per_second), burst, cost)


async def decide(
    store: Store, requests: int, *limits: tuple[int, ...], keys: list[str] = KEYS
) -> list[int]:
    """`requests` requests of one identity in one call: the raw answer."""
    args = [requests, *(value for limit in limits for value in limit)]
    answer = await store.eval(SCRIPT, keys[: len(limits)], args)
    return [int(value) for value in answer]


async def check(store: Store, *limits: tuple[int, ...]) -> list[int]:
    """One request: `[admitted (1|0), retry_after, remaining_1, reset_1, ...]`."""
    return await decide(store, 1, *limits)


async def test_limit_one_admits_once_and_records_nothing_more(store: Store, peek: Peek) -> None:
    assert await check(store, sliding(1, 60)) == [1, 0, 0, 60]
    assert await check(store, sliding(1, 60)) == [0, 60, 0, 60]
    assert await check(store, sliding(1, 60)) == [0, 60, 0, 60]
    assert await peek.entries(KEYS[0]) == 1


async def test_sliding_window_counts_down_and_sets_the_ttl(store: Store, peek: Peek) -> None:
    answers = [await check(store, sliding(3, 10)) for _ in range(4)]
    assert answers == [[1, 0, 2, 10], [1, 0, 1, 10], [1, 0, 0, 10], [0, 10, 0, 10]]
    assert await peek.entries(KEYS[0]) == 3
    ttl = await peek.ttl(KEYS[0])
    assert ttl is not None
    assert 9 < ttl <= 10


async def test_window_passing_frees_the_places(store: Store, peek: Peek) -> None:
    limit = sliding(2, 0.4)
    assert [(await check(store, limit))[0] for _ in range(3)] == [1, 1, 0]
    await asyncio.sleep(0.45)  # the window itself is what is under test
    assert [(await check(store, limit))[0] for _ in range(3)] == [1, 1, 0]
    # The expired admissions were trimmed, the rejected ones never recorded.
    assert await peek.entries(KEYS[0]) == 2


async def test_token_bucket_burst_then_refill(store: Store, peek: Peek) -> None:
    limit = bucket(10, 5)
    started = time.monotonic()
    answers = [await check(store, limit) for _ in range(6)]
    assert [a[0] for a in answers] == [1, 1, 1, 1, 1, 0]
    assert [a[2] for a in answers] == [4, 3, 2, 1, 0, 0]
    assert answers[5][1] == 1  # Retry-After: 100 ms rounded up to a whole second
    ttl = await peek.ttl(KEYS[0])
    assert ttl is not None
    assert 0.3 < ttl <= 0.5  # the bucket is full again 500 ms after the first request
    await asyncio.sleep(0.25)  # refill: two tokens at 10/s
    admitted = sum([(await check(store, limit))[0] for _ in range(4)])
    # At least the 2.5 tokens of the sleep; more only if the machine was slow.
    assert 2 <= admitted <= int((time.monotonic() - started) / 0.1)


async def test_token_bucket_cost_and_sub_second_refill(store: Store) -> None:
    limit = bucket(20, 4, cost=2)  # one token per 50 ms, two per request
    assert [(await check(store, limit))[:3] for _ in range(3)] == [[1, 0, 2], [1, 0, 0], [0, 1, 0]]
    await asyncio.sleep(0.12)
    assert (await check(store, limit))[0] == 1


async def test_cost_above_burst_is_never_admitted_nor_recorded(store: Store, peek: Peek) -> None:
    assert await check(store, bucket(10, 2, cost=3)) == [0, 1, 2, 0]
    assert not await peek.exists(KEYS[0])


async def test_rejected_request_consumes_from_no_limit(store: Store, peek: Peek) -> None:
    limits = (bucket(10, 5), sliding(1, 60))
    assert await check(store, *limits) == [1, 0, 4, 1, 0, 60]
    full_at = await peek.number(KEYS[0])
    assert full_at is not None
    # The sliding window refuses: the bucket keeps its 4 tokens and its stored state.
    assert await check(store, *limits) == [0, 60, 4, 1, 0, 60]
    assert await check(store, *limits) == [0, 60, 4, 1, 0, 60]
    assert await peek.number(KEYS[0]) == full_at
    assert await peek.entries(KEYS[1]) == 1


async def test_all_limits_of_a_call_are_checked(store: Store) -> None:
    limits = (sliding(3, 2), sliding(5, 3600))
    decisions = [(await check(store, *limits))[0] for _ in range(6)]
    assert decisions == [1, 1, 1, 0, 0, 0]
    answer = await check(store, *limits)
    assert answer[2:] == [0, 2, 2, 3600]


async def test_approximate_window_counts_and_expires(store: Store, peek: Peek) -> None:
    answers = [await check(store, approximate(3, 10)) for _ in range(4)]
    assert [a[0] for a in answers] == [1, 1, 1, 0]
    assert [a[2] for a in answers] == [2, 1, 0, 0]
    assert 1 <= answers[3][1] <= 14  # a third of the count fades by the end of the next window
    ttl = await peek.ttl(KEYS[0])
    assert ttl is not None
    assert 10 < ttl <= 20


async def test_a_batch_is_decided_in_order_like_separate_calls(store: Store, peek: Peek) -> None:
    # Five concurrent requests, limit 3: three admitted with their own counts, then one
    # answer for the rejected rest.
    assert await decide(store, 5, sliding(3, 10)) == [3, 10, 2, 10, 1, 10, 0, 10, 0, 10]
    assert await peek.entries(KEYS[0]) == 3
    assert await decide(store, 2, sliding(3, 10)) == [0, 10, 0, 10]
    assert await decide(store, 3, bucket(10, 2), sliding(5, 10), keys=KEYS[1:]) == [
        *(2, 1),  # two admitted; the rest may retry in 1 s
        *(1, 1, 4, 10, 0, 1, 3, 10),  # each admitted request's own counts
        *(0, 1, 3, 10),  # rejected by the bucket: the window keeps 3 places
    ]


async def test_a_batch_of_one_microsecond_keeps_every_admission(redis_url: str) -> None:
    client = aioredis.Redis.from_url(redis_url)
    try:
        answer = await client.eval(SCRIPT.lua, 1, KEYS[0], 4, *sliding(10, 60))
        assert answer[0] == 4
        entries = cast(
            list[tuple[bytes, float]], await client.zrange(KEYS[0], 0, -1, withscores=True)
        )
        assert len(entries) == 4
        stamp = entries[0][0]
        assert {member for member, _ in entries} == {
            stamp + suffix for suffix in (b"", b"-1", b"-2", b"-3")
        }
        assert {score for _, score in entries} == {int(stamp)}
    finally:
        await client.aclose()


async def test_script_flush_on_the_server_is_survived(
    redis_store: RedisStore, redis_server: RedisServer
) -> None:
    assert (await check(redis_store, sliding(3, 60)))[:3] == [1, 0, 2]
    redis_server.cli("SCRIPT", "FLUSH")
    assert redis_server.cli("SCRIPT", "EXISTS", SCRIPT.sha) == "0"
    assert (await check(redis_store, sliding(3, 60)))[:3] == [1, 0, 1]
    assert redis_server.cli("SCRIPT", "EXISTS", SCRIPT.sha) == "1"  # cached again by EVAL
    assert (await check(redis_store, sliding(3, 60)))[:3] == [1, 0, 0]


# Fills the admission log with one member per microsecond, named as the script names them,
# from 500 ms ahead (seeding can take over 60 ms on a loaded machine), then spins until that
# moment: the command after it in the same transaction then runs in a microsecond that
# already has an admission.
SEED_AHEAD = """
local t = redis.call('TIME')
local start = tonumber(t[1]) * 1000000 + tonumber(t[2]) + 500000
for i = 0, 15000 do
  local at = start + i
  redis.call('ZADD', KEYS[1], at, string.format('%d', at))
end
repeat
  t = redis.call('TIME')
until tonumber(t[1]) * 1000000 + tonumber(t[2]) >= start
return start
"""


async def test_two_admissions_in_one_microsecond_are_both_recorded(redis_url: str) -> None:
    client = aioredis.Redis.from_url(redis_url)
    args = sliding(1_000_000, 3600)
    try:
        async with client.pipeline(transaction=True) as pipe:
            pipe.eval(SEED_AHEAD, 1, KEYS[0])
            pipe.eval(SCRIPT.lua, 1, KEYS[0], 1, *args)
            start, answer = await pipe.execute()
        assert answer[0] == 1
        assert await client.zcard(KEYS[0]) == 15001 + 1
        members = cast(list[bytes], await client.zrange(KEYS[0], 0, -1))
        duplicates = [member for member in members if b"-" in member]
        assert len(duplicates) == 1
        stamp, _, suffix = duplicates[0].partition(b"-")
        assert suffix == b"1"
        assert start <= int(stamp) < start + 15000
        assert await client.zscore(KEYS[0], duplicates[0]) == int(stamp)
    finally:
        await client.aclose()


class Clock(MemoryKeyspace):
    """The memory keyspace with a hand-moved clock, to drive the twin microsecond by microsecond."""

    def __init__(self) -> None:
        super().__init__(1 << 20)
        self.at = 1_700_000_000.0

    def now(self) -> float:
        return self.at

    def set(self, key: str, value: Any, ttl: float | None = None) -> None:
        # Expiry runs on the real clock, not this one: keep keys, the script trims them itself.
        super().set(key, value, None)


def test_twin_counts_equal_timestamps_and_frees_at_the_exact_boundary() -> None:
    clock = Clock()
    args = sliding(3, 0.5)
    answers = [check_local(clock, KEYS[:1], (1, *args)) for _ in range(4)]
    assert answers == [[1, 0, 2, 1], [1, 0, 1, 1], [1, 0, 0, 1], [0, 1, 0, 1]]
    clock.at += 0.5 - 0.000_001
    assert check_local(clock, KEYS[:1], (1, *args))[0] == 0  # one microsecond short
    clock.at = 1_700_000_000.5
    assert check_local(clock, KEYS[:1], (1, *args))[:3] == [1, 0, 2]  # all three left together


def test_every_key_of_a_call_shares_one_cluster_slot() -> None:
    policy = PolicyKeys("policy:api", ("0:sw", "1:tb", "2:sa1000000"))
    tag, keys = policy.bucket_keys("10.0.0.1")
    assert len({key_slot(key.encode()) for key in keys}) == 1
    assert all(key.startswith(tag) and key.startswith("rl:v2:{") for key in keys)
    # The route's leaderboard in that shard shares the slot: one script call counts both.
    assert key_slot(board(tag, "api").encode()) == key_slot(keys[0].encode())
    assert board(tag, "api") in policy.boards("api")
    other = policy.bucket_keys("10.0.0.2")[1]
    assert other[0] != keys[0]
    # Identities spread over the shards.
    assert len({policy.bucket_keys(f"10.0.0.{n}")[0] for n in range(200)}) > SHARDS // 2
    # Client input is hashed, never spliced.
    spliced = PolicyKeys("route:x", ("0:sw",)).bucket_keys("}{evil:*\r\n")[1]
    assert "evil" not in spliced[0]
    assert spliced[0].count("{") == 1


@settings(max_examples=60, deadline=None)
@given(
    groups=st.lists(st.tuples(st.integers(0, 400_000), st.integers(1, 6)), min_size=1, max_size=25),
    limit=st.integers(1, 5),
    window=st.integers(1_000, 1_000_000),
)
def test_twin_batches_never_admit_more_than_the_limit_in_any_window(
    groups: list[tuple[int, int]], limit: int, window: int
) -> None:
    """Requests arriving together (one call for `size` of them) or apart: exact either way."""
    clock = Clock()
    start = clock.at
    admitted: list[int] = []
    at = 0
    for gap, size in groups:
        at += gap
        clock.at = start + at / 1_000_000
        now = int(clock.now() * 1_000_000)
        in_window = sum(1 for t in admitted if now - window < t <= now)
        answer = check_local(clock, KEYS[:1], (size, SLIDING, limit, window, 0))
        # Admitted in order while there is room, as separate calls would have been.
        assert answer[0] == min(size, max(0, limit - in_window))
        admitted += [now] * answer[0]
    for i in range(limit, len(admitted)):
        assert admitted[i] - admitted[i - limit] >= window
