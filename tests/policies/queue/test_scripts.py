"""The queue's Lua scripts on a real redis-server and their twins on `memory://`: same answers.

Every test runs on both stores (the `store` fixture).
"""

from __future__ import annotations

import asyncio
from typing import Any

from redis.crc import key_slot

from gateway.store import Store
from policies.queue.entry import parse
from policies.queue.scripts import GROUP, RouteKeys, scripts

S = scripts()
K = RouteKeys.of("hooks")
DAY_MS = 86_400_000


async def enqueue(store: Store, body: bytes = b"{}") -> str:
    fields = ["m", "POST", "p", "/hook?a=1", "h", '{"headers": []}', "b", body]
    answer = await store.eval(S.enqueue, [K.stream], [DAY_MS, *fields])
    return answer.decode()


async def take(
    store: Store, consumer: str = "c1", count: int = 10, visibility_ms: int = 30_000
) -> list[Any]:
    _, raw = await store.eval(
        S.take, [K.stream, K.due, K.parked], [GROUP, consumer, count, visibility_ms, "0-0"]
    )
    return [parse(i, int(lost), pairs) for i, lost, pairs in raw]


async def settle(
    store: Store,
    entry: Any,
    verdict: str,
    *,
    attempts: int = 1,
    status: str = "200",
    error: str = "",
    delay_ms: int = 0,
    counter: str = "",
) -> int:
    args = [GROUP, entry.id, verdict, entry.key, attempts, status, error, delay_ms, DAY_MS, counter]
    return int(await store.eval(S.settle, [K.stream, K.due, K.parked, K.dead, K.counts], args))


async def stats(store: Store) -> dict[str, Any]:
    _, length, pending, parked, dead, oldest, tally, recent = await store.eval(
        S.stats, [K.stream, K.due, K.dead, K.counts], [GROUP, 10]
    )
    return {
        "length": int(length),
        "pending": int(pending),
        "parked": int(parked),
        "dead": int(dead),
        "oldest": oldest.decode(),
        "delivered": int(tally[0]),
        "failed": int(tally[1]),
        "recent": [[x.decode() if isinstance(x, bytes) else int(x) for x in r] for r in recent],
    }


def test_every_key_of_a_route_is_in_one_cluster_slot() -> None:
    slots = {key_slot(key.encode()) for key in (K.stream, K.due, K.parked, K.dead, K.counts)}
    assert len(slots) == 1
    assert key_slot(RouteKeys.of("other").stream.encode()) != slots.pop()


async def test_accept_take_deliver_ack(store: Store) -> None:
    ids = [await enqueue(store, f"body {n}".encode()) for n in range(3)]
    assert len(set(ids)) == 3
    taken = await take(store)
    assert [e.id for e in taken] == ids
    first = taken[0]
    assert (first.key, first.attempts, first.method, first.target, first.body) == (
        ids[0],
        0,
        "POST",
        "/hook?a=1",
        b"body 0",
    )
    assert await take(store, "c2") == []  # held by c1, not yet over the visibility timeout
    assert (await stats(store))["pending"] == 3
    assert await settle(store, first, "ack", counter="delivered") == 1
    assert await settle(store, first, "ack", counter="delivered") == 0  # settled once only
    s = await stats(store)
    assert (s["length"], s["pending"], s["delivered"]) == (2, 2, 1)
    assert s["oldest"] == ids[1]


async def test_a_parked_entry_comes_back_when_due_under_its_first_id(store: Store) -> None:
    key = await enqueue(store)
    (entry,) = await take(store)
    await settle(
        store, entry, "park", attempts=1, status="503", error="busy", delay_ms=150, counter="failed"
    )
    s = await stats(store)
    assert (s["length"], s["pending"], s["parked"], s["failed"], s["oldest"]) == (0, 0, 1, 1, key)
    assert await take(store) == []  # not due yet
    await asyncio.sleep(0.2)
    (again,) = await take(store)
    assert again.id != key  # re-added at the end of the stream
    assert (again.key, again.attempts, again.status, again.error) == (key, 1, "503", "busy")
    assert (await stats(store))["parked"] == 0


async def test_an_entry_held_too_long_is_reclaimed_with_a_lost_attempt(store: Store) -> None:
    key = await enqueue(store)
    (held,) = await take(store, "dead-gateway", visibility_ms=100)
    assert await take(store, "alive", visibility_ms=100) == []
    await asyncio.sleep(0.15)
    (reclaimed,) = await take(store, "alive", visibility_ms=100)
    assert (reclaimed.id, reclaimed.key, reclaimed.attempts) == (held.id, key, 1)
    # The first holder's late verdict still counts once; the second finds nothing to settle.
    assert await settle(store, held, "ack") == 1
    assert await settle(store, reclaimed, "ack") == 0


async def test_dead_letters_are_listed_and_replayed(store: Store) -> None:
    keys = [await enqueue(store, f"{n}".encode()) for n in range(3)]
    for entry in await take(store):
        await settle(store, entry, "dead", attempts=1, status="400", error="bad field")
    s = await stats(store)
    assert (s["length"], s["pending"], s["dead"]) == (0, 0, 3)
    newest = s["recent"][0]
    assert newest[1:] == [keys[2], "1", "400", "bad field", "POST", "/hook?a=1"]
    moved, after = await store.eval(S.replay, [K.stream, K.dead], [keys[1], "-", 200])
    assert (int(moved), after) == (1, b"")
    (back,) = await take(store)
    assert (back.key, back.attempts, back.body) == (keys[1], 0, b"1")
    # Every one, a page at a time.
    total, start = 0, "-"
    while start:
        moved, after = await store.eval(S.replay, [K.stream, K.dead], ["", start, 1])
        total, start = total + int(moved), after.decode()
    assert total == 2
    assert (await stats(store))["dead"] == 0
    assert sorted(e.key for e in await take(store)) == [keys[0], keys[2]]


async def test_retention_trims_old_entries(store: Store) -> None:
    # 150 entries kept for a day, then one kept for 1 ms: the 150 are older than that by
    # then (Redis trims whole nodes, `~`, so more than one node's worth is written).
    for _ in range(150):
        await enqueue(store)
    await asyncio.sleep(0.01)  # ages them past 1 ms; nothing is waited for
    fields = ["m", "POST", "p", "/", "h", "{}", "b", b""]
    await store.eval(S.enqueue, [K.stream], [1, *fields])
    assert (await stats(store))["length"] < 150


async def test_a_stopping_consumer_leaves_the_group_when_it_holds_nothing(store: Store) -> None:
    await enqueue(store)
    (entry,) = await take(store, "c1")
    assert int(await store.eval(S.leave, [K.stream], [GROUP, "c1"])) == 0  # holds one
    await settle(store, entry, "ack")
    assert int(await store.eval(S.leave, [K.stream], [GROUP, "c1"])) == 1
