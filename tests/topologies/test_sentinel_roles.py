"""Failovers the Sentinels run while the old master still lives (maintenance, a flapping
network): the store must move to the master the Sentinels name at once, never keep writing to
the old one (whose writes are lost when it is demoted) nor to a replica."""

from __future__ import annotations

import asyncio
import time

import pytest

from gateway.errors import StoreUnavailable
from gateway.store.redis import RedisStore
from gateway.store.resp import RespClient
from tests.support.polling import eventually
from tests.support.redis_sentinel import SERVICE
from tests.topologies.conftest import Topology

pytestmark = pytest.mark.sentinel


def _switched_by_any(topology: Topology, port: int) -> bool:
    """Whether a Sentinel finished the failover to `port` (the others learn it later)."""
    group = topology.sentinel
    assert group is not None
    for sentinel in group.sentinels:
        with sentinel.client() as client:
            # Not get-master-addr-by-name: that names the promoted replica before the
            # failover is over.
            if client.sentinel_master(SERVICE)["port"] == port:
                return True
    return False


async def test_a_server_named_as_master_that_is_a_replica_is_refused(sentinel: Topology) -> None:
    # What a lagging Sentinel may do: name a server that has been demoted meanwhile.
    group = sentinel.sentinel
    assert group is not None
    client = RespClient(("127.0.0.1", group.replica().port), timeout=0.25, require_master=True)
    try:
        with pytest.raises(StoreUnavailable, match="is a slave, not the master"):
            await client.execute("GET", "k")
    finally:
        await client.close()
    master = RespClient(("127.0.0.1", group.master().port), timeout=0.25, require_master=True)
    try:
        assert await master.execute("SET", "k", "v") == b"OK"
    finally:
        await master.close()


async def test_a_manual_failover_moves_writes_and_subscriptions_at_once(
    sentinel: Topology,
) -> None:
    group = sentinel.sentinel
    assert group is not None
    old, new = group.master(), group.replica()
    store = RedisStore(sentinel.url, timeout=0.25)
    listener = RedisStore(sentinel.url, timeout=0.25)
    publisher = RedisStore(sentinel.url, timeout=0.25)
    received: list[bytes] = []
    statuses: list[bool] = []
    try:
        subscription = await listener.subscribe(
            "t:moved", received.append, on_status=statuses.append
        )
        for _ in range(2):  # both pipelined connections open, to the old master
            assert await store.set("k", b"before")
        with group.sentinels[0].client() as client:
            client.execute_command("SENTINEL", "FAILOVER", SERVICE)
        await eventually(lambda: _switched_by_any(sentinel, new.port), "a Sentinel to switch")
        switched = time.monotonic()
        # Writes land on the new master within moments, not when the old one is demoted.
        while new.cli("GET", "k") != "after":
            assert time.monotonic() - switched < 1.5, "writes did not follow the failover"
            await store.set("k", b"after")
            await asyncio.sleep(0.05)
        # The old master still takes writes (the Sentinels demote it some 10 s later): without
        # following +switch-master, the ones above would have gone there and been lost.
        assert old.cli("ROLE").split()[0] == "master"
        # The subscription moved to the new master too, reporting the gap.
        while not received:
            assert time.monotonic() - switched < 3, "the subscription did not follow"
            await publisher.publish("t:moved", b"on the new master")
            await asyncio.sleep(0.1)
        assert statuses[:2] == [True, False]
        assert statuses[-1] is True
        subscription.close()
    finally:
        for each in (store, listener, publisher):
            await each.close()
        old.cli("REPLICAOF", "127.0.0.1", str(new.port))  # what the Sentinels will do, sooner
