"""`heartbeat.lua` on a real redis-server and its Python twin on `memory://`: same answers."""

from __future__ import annotations

import asyncio

from gateway.store import Store
from policies.ratelimit.heartbeat import Heartbeat, heartbeat_script, processes_key

SCRIPT = heartbeat_script()
KEY = processes_key()
MINUTE = 60_000_000


async def beat(store: Store, member: str, age: int = MINUTE) -> int:
    return int(await store.eval(SCRIPT, [KEY], [member, age]))


async def test_each_process_counts_once(store: Store) -> None:
    assert await beat(store, "a") == 1
    assert await beat(store, "b") == 2
    assert await beat(store, "a") == 2  # a beat again is the same process
    assert await beat(store, "c") == 3


async def test_a_silent_process_stops_counting(store: Store) -> None:
    assert await beat(store, "a") == 1  # the set now lives a minute: only members can go
    assert await beat(store, "b", 1_000_000) == 2  # a beat less than 1s ago: it counts
    await asyncio.sleep(1.1)  # time has to pass: nothing happens to wait for
    # a's last beat is now older than the 1s b counts with: gone, b alone.
    assert await beat(store, "b", 1_000_000) == 1


async def test_the_set_expires_with_its_last_process(store: Store) -> None:
    assert await beat(store, "a", 200_000) == 1
    await asyncio.sleep(0.35)
    # Nothing beat for longer than the age: the whole key is gone, not only its members.
    assert await beat(store, "b", MINUTE) == 1


def test_the_key_is_versioned_and_hash_tagged() -> None:
    assert KEY.startswith("gw:v1:{")
    assert KEY.endswith("}")


async def test_one_heartbeat_remembers_the_count(store: Store) -> None:
    heartbeat = Heartbeat(store)
    assert heartbeat.seen == 1  # before the first beat: alone, as far as it knows
    await beat(store, "another")
    assert await heartbeat.beat() == 2
    assert heartbeat.seen == 2
