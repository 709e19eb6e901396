"""The store contract on a 3-master Cluster and through Sentinels: every operation, for real."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import pytest
from redis.crc import key_slot

from gateway.errors import StoreUnavailable
from gateway.store import Keyspace, Script, Value
from gateway.store.redis import RedisStore
from tests.support.redis_cluster import cli
from tests.topologies.conftest import Topology


def _twin(keyspace: Keyspace, keys: Sequence[str], args: Sequence[Value]) -> list[int]:
    counts = []
    for key in keys:
        keyspace.set(key, int(keyspace.get(key) or 0) + int(args[0]))
        counts.append(int(keyspace.get(key)))
    return [*counts, int(keyspace.now())]


TAGGED = Script.load("tests.topologies", "tagged_counts.lua", local=_twin)

TAGS = [f"tag{n}" for n in range(12)]
"""Hash tags whose slots fall on every master of a 3-master Cluster (checked below)."""


def test_the_tags_spread_over_all_three_masters() -> None:
    # CLUSTER ADDSLOTS splits 0..16383 in three ranges: 12 tags land in all three.
    thirds = {key_slot(tag.encode()) * 3 // 16384 for tag in TAGS}
    assert thirds == {0, 1, 2}


async def test_scripts_on_keys_of_one_hash_tag(store: RedisStore) -> None:
    for tag in TAGS:
        keys = [f"t:{{{tag}}}:a", f"t:{{{tag}}}:b", f"t:{{{tag}}}:c"]
        first = await store.eval(TAGGED, keys, [2])
        second = await store.eval(TAGGED, keys, [3])
        assert first[:3] == [2, 2, 2]
        assert second[:3] == [5, 5, 5]
        assert abs(second[3] - time.time()) < 5  # Redis's own clock
        assert [await store.get(key) for key in keys] == [b"5"] * 3


async def test_get_set_delete_across_slots(store: RedisStore, topology: Topology) -> None:
    keys = [f"plain:{n}" for n in range(40)]  # no tag: spread over every slot owner
    assert len({key_slot(key.encode()) for key in keys}) == 40
    for n, key in enumerate(keys):
        assert await store.set(key, f"v{n}".encode())
    assert [await store.get(key) for key in keys] == [f"v{n}".encode() for n in range(40)]
    assert await store.get("plain:missing") is None
    assert not await store.set(keys[0], b"other", nx=True)
    assert await store.get(keys[0]) == b"v0"
    assert await store.set("plain:ttl", b"x", ttl=30, nx=True)
    assert 29_000 < int(topology.cli("PTTL", "plain:ttl")) <= 30_000
    assert await store.delete(*keys, "plain:missing") == 40
    assert [await store.get(key) for key in keys[:3]] == [None] * 3
    assert await store.delete() == 0


async def test_hashes_with_and_without_expiry(store: RedisStore, topology: Topology) -> None:
    await store.hset("session:{abc}", {"user_id": 42, "role": "admin"}, ttl=60)
    assert await store.hmget("session:{abc}", ["user_id", "role", "nope"]) == [
        b"42",
        b"admin",
        None,
    ]
    assert 59_000 < int(topology.cli("PTTL", "session:{abc}")) <= 60_000
    await store.hset("h:{other}", {"a": 1.5})
    assert await store.hmget("h:{other}", ["a"]) == [b"1.5"]
    assert topology.cli("PTTL", "h:{other}") == "-1"


async def test_a_message_published_by_one_store_reaches_a_subscriber_of_another(
    topology: Topology,
) -> None:
    publisher = RedisStore(topology.url, timeout=1.0)
    subscriber = RedisStore(topology.url, timeout=1.0)
    received: asyncio.Queue[bytes] = asyncio.Queue()
    statuses: list[bool] = []
    try:
        subscription = await subscriber.subscribe(
            "gw:events", received.put_nowait, on_status=statuses.append
        )
        assert statuses == [True]
        for n in range(5):
            await publisher.publish("gw:events", f"m{n}".encode())
        async with asyncio.timeout(5):
            assert [await received.get() for _ in range(5)] == [f"m{n}".encode() for n in range(5)]
        subscription.close()
    finally:
        await publisher.close()
        await subscriber.close()


async def test_scripts_are_reloaded_after_script_flush_on_every_node(
    store: RedisStore, topology: Topology
) -> None:
    calls: list[tuple[str, bool]] = []
    store._observer = lambda op, _seconds, failed: calls.append((op, failed))
    keys = [f"t:{{{tag}}}" for tag in TAGS]
    for key in keys:
        assert (await store.eval(TAGGED, [key], [1]))[0] == 1
    for port in topology.data_ports():
        assert cli(port, "SCRIPT", "FLUSH") == "OK"
        assert cli(port, "SCRIPT", "EXISTS", TAGGED.sha) == "0"
    for key in keys:  # NOSCRIPT everywhere, answered by EVAL, which caches the script again
        assert (await store.eval(TAGGED, [key], [1]))[0] == 2
    assert all(not failed for _, failed in calls)  # NOSCRIPT is an answer, not a failure
    assert store.breaker.state.name == "CLOSED"
    assert all(cli(port, "SCRIPT", "EXISTS", TAGGED.sha) == "1" for port in topology.masters())


@pytest.mark.cluster
async def test_a_script_over_two_slots_is_refused_without_tripping_the_breaker(
    cluster: Topology,
) -> None:
    store = RedisStore(cluster.url, timeout=1.0)
    try:
        for _ in range(store.breaker.threshold + 1):
            with pytest.raises(StoreUnavailable, match="slot"):
                await store.eval(TAGGED, ["t:{a}", "t:{b}"], [1])
        # Redis itself is fine: a programming error must not take the store from everyone.
        assert store.breaker.state.name == "CLOSED"
        assert (await store.eval(TAGGED, ["t:{a}"], [1]))[0] == 1
    finally:
        await store.close()


async def test_a_refused_command_is_store_unavailable_and_not_an_outage(store: RedisStore) -> None:
    await store.set("s:{x}", b"a string")
    for _ in range(store.breaker.threshold + 1):
        with pytest.raises(StoreUnavailable, match="WRONGTYPE"):
            await store.hmget("s:{x}", ["field"])
    assert store.breaker.state.name == "CLOSED"
    assert await store.get("s:{x}") == b"a string"


async def test_far_more_concurrent_calls_than_connections(topology: Topology) -> None:
    # A burst must queue on the few pipelined connections, never fail for want of one.
    store = RedisStore(topology.url, timeout=2.0, pool_size=4)
    try:
        results = await asyncio.gather(
            *(store.eval(TAGGED, [f"burst:{{{n % 30}}}"], [1]) for n in range(600))
        )
        assert sorted(result[0] for result in results) == sorted(
            count for _ in range(30) for count in range(1, 21)
        )
        assert store.breaker.state.name == "CLOSED"
    finally:
        await store.close()
