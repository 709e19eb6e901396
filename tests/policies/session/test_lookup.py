"""The read step (`read.lua` and its memory twin): one contract, run on both stores."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from gateway.store import Keyspace, Script, Store, Value
from policies.session.lookup import Reader, Reads

KEY = "session:" + "k" * 20


def _pttl_local(keyspace: Keyspace, keys: Sequence[str], args: Sequence[Value]) -> Any:
    left = keyspace.ttl(keys[0])
    return None if left is None else int(left * 1000)


# The stores have no TTL read of their own; a one-line probe reads it the same on both.
_PTTL = Script("pttl", "return redis.call('PTTL', KEYS[1])", _pttl_local)


async def _ttl(store: Store, key: str) -> int | None:
    left = await store.eval(_PTTL, [key], [])
    return None if left is None or left < 0 else int(left)


async def test_missing_session_is_none(store: Store) -> None:
    reader = Reader(["user_id"], 0.0, 0.0)
    assert reader.decode(await store.eval(reader.script, [KEY], reader.args)) is None
    whole = Reader(None, 0.0, 0.0)
    assert whole.decode(await store.eval(whole.script, [KEY], whole.args)) is None


async def test_named_fields_and_whole_hash(store: Store) -> None:
    await store.hset(KEY, {"user_id": 42, "role": "admin", "name": "Zoë"}, ttl=60)
    named = Reader(["user_id", "absent", "role"], 0.0, 0.0)
    assert named.decode(await store.eval(named.script, [KEY], named.args)) == {
        "user_id": "42",
        "role": "admin",
    }
    whole = Reader(None, 0.0, 0.0)
    assert whole.decode(await store.eval(whole.script, [KEY], whole.args)) == {
        "user_id": "42",
        "role": "admin",
        "name": "Zoë",
    }


async def test_a_session_without_the_named_fields_still_exists(store: Store) -> None:
    await store.hset(KEY, {"other": "1"}, ttl=60)
    named = Reader(["user_id"], 0.0, 0.0)
    assert named.decode(await store.eval(named.script, [KEY], named.args)) == {}


async def test_deleted_session_is_gone_at_once(store: Store) -> None:
    await store.hset(KEY, {"user_id": "1"}, ttl=60)
    reader = Reader(["user_id"], 0.0, 0.0)
    assert reader.decode(await store.eval(reader.script, [KEY], reader.args)) == {"user_id": "1"}
    assert await store.delete(KEY) == 1
    assert reader.decode(await store.eval(reader.script, [KEY], reader.args)) is None


async def test_sliding_expiry_is_extended_only_below_the_threshold(store: Store) -> None:
    # sliding 100 s, refresh every 10 s: the expiry moves only once less than 90 s are left.
    reader = Reader(["user_id"], 100.0, 10.0)
    assert reader.args[:2] == [100_000, 90_000]
    await store.hset(KEY, {"user_id": "1"}, ttl=30)
    await store.eval(reader.script, [KEY], reader.args)
    extended = await _ttl(store, KEY)
    assert extended is not None
    assert 99_000 < extended <= 100_000

    await store.hset(KEY, {"user_id": "1"}, ttl=95)  # 5 s since the last refresh: too soon
    await store.eval(reader.script, [KEY], reader.args)
    untouched = await _ttl(store, KEY)
    assert untouched is not None
    assert 94_000 < untouched <= 95_000

    await store.hset(KEY, {"user_id": "1"}, ttl=89)  # 11 s since: due
    await store.eval(reader.script, [KEY], reader.args)
    again = await _ttl(store, KEY)
    assert again is not None
    assert 99_000 < again <= 100_000


async def test_sliding_never_shortens_a_longer_expiry(store: Store) -> None:
    reader = Reader(None, 100.0, 10.0)
    await store.hset(KEY, {"user_id": "1"}, ttl=3600)
    await store.eval(reader.script, [KEY], reader.args)
    ttl = await _ttl(store, KEY)
    assert ttl is not None
    assert ttl > 3_500_000


async def test_without_sliding_the_expiry_stands(store: Store) -> None:
    reader = Reader(["user_id"], 0.0, 0.0)
    await store.hset(KEY, {"user_id": "1"}, ttl=30)
    await store.eval(reader.script, [KEY], reader.args)
    ttl = await _ttl(store, KEY)
    assert ttl is not None
    assert 29_000 < ttl <= 30_000


async def test_a_read_joining_a_finished_one_in_the_same_turn_is_answered(store: Store) -> None:
    # The memory store answers without yielding to the loop: a request of the same session
    # later in the same turn must not join a read that has already answered (it never would
    # be woken). Found by `gateway loadtest`: concurrent requests of one session hung.
    await store.hset(KEY, {"user_id": "42"}, ttl=60)
    reads = Reads(store, Reader(["user_id"], 0.0, 0.0))
    first = await reads.read(KEY)
    second = await asyncio.wait_for(asyncio.ensure_future(reads.read(KEY)), 2)
    assert first == second == {"user_id": "42"}
