"""Failovers the Sentinels run while the old master still lives (maintenance, a flapping
network): the pipelined client must end up on the master the Sentinels name, never keep
writing to a replica."""

from __future__ import annotations

import pytest

from gateway.errors import StoreUnavailable
from gateway.store.redis import RedisStore
from gateway.store.resp import RespClient
from tests.support.polling import wait_until
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


async def test_a_demoted_master_answering_readonly_sends_the_client_back_to_the_sentinels(
    sentinel: Topology,
) -> None:
    group = sentinel.sentinel
    assert group is not None
    old, new = group.master(), group.replica()
    store = RedisStore(sentinel.url, timeout=0.25)
    try:
        for _ in range(2):  # both pipelined connections open, to the old master
            assert await store.set("k", b"before")
        with group.sentinels[0].client() as client:
            client.execute_command("SENTINEL", "FAILOVER", SERVICE)
        # One Sentinel knows; the others may lag a little (the client must not care).
        wait_until(lambda: _switched_by_any(sentinel, new.port), "a Sentinel to switch masters")
        # The old master is demoted while our connection to it stays open (the Sentinels
        # do this a few seconds later, and kill clients then; REPLICAOF alone does not).
        old.cli("REPLICAOF", "127.0.0.1", str(new.port))
        with pytest.raises(StoreUnavailable, match="READONLY"):
            await store.set("k", b"refused")
        # The connection was dropped, the Sentinels asked again: the new master takes it.
        assert await store.set("k", b"after")
        assert new.cli("GET", "k") == "after"
        assert store.breaker.state.name == "CLOSED"
    finally:
        await store.close()


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
