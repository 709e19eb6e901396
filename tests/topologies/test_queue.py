"""The queue's script contract and policy tests, rerun on the Cluster and through Sentinels,
and a delivery that meets a MOVED because its route's slot was resharded meanwhile.

The test bodies are the policy's own (imported, not copied); this package's conftest gives
them the topology's `store`, so each runs once per topology.
"""

from __future__ import annotations

import pytest
from redis.crc import key_slot

from gateway.store.redis import RedisStore
from policies.queue.scripts import RouteKeys
from tests.conftest import GatewayFactory
from tests.policies.queue import test_policy, test_scripts
from tests.policies.queue.conftest import Receiver, config, post, queue_status, until
from tests.support.upstream import Upstream
from tests.topologies.conftest import Topology
from tests.topologies.test_cluster_resharding import _elsewhere, _redirects

test_accept_take_deliver_ack = test_scripts.test_accept_take_deliver_ack
test_a_parked_entry_comes_back_when_due_under_its_first_id = (
    test_scripts.test_a_parked_entry_comes_back_when_due_under_its_first_id
)
test_an_entry_held_too_long_is_reclaimed_with_a_lost_attempt = (
    test_scripts.test_an_entry_held_too_long_is_reclaimed_with_a_lost_attempt
)
test_dead_letters_are_listed_and_replayed = test_scripts.test_dead_letters_are_listed_and_replayed
test_accepted_then_delivered_with_its_idempotency_key = (
    test_policy.test_accepted_then_delivered_with_its_idempotency_key
)
test_a_400_is_dead_lettered_not_retried_and_replay_sends_it_again = (
    test_policy.test_a_400_is_dead_lettered_not_retried_and_replay_sends_it_again
)


@pytest.mark.cluster
async def test_a_retry_follows_moved_after_the_routes_slot_was_resharded(
    make_gateway: GatewayFactory, upstream: Upstream, cluster: Topology
) -> None:
    group = cluster.cluster
    assert group is not None
    receiver = Receiver((503, {"Retry-After": "2"}))  # time to reshard meanwhile
    upstream.route("/hooks/moved", receiver)
    store = RedisStore(cluster.url, timeout=1.0)
    try:
        gateway = await make_gateway(config(), store=store)
        status, answer = await post(gateway, "/hooks/moved")
        assert status == 202

        async def waiting() -> bool:
            return (await queue_status(gateway))["retrying"] == 1

        await until(waiting)
        slot = key_slot(RouteKeys.of("hooks").stream.encode())
        moved_before = _redirects(group, "MOVED")
        owner = group.owner(slot)
        group.move_slot(slot, _elsewhere(group, owner))
        assert group.owner(slot) != owner

        async def delivered() -> bool:
            return (await queue_status(gateway))["delivered"] == 1

        await until(delivered)
        assert _redirects(group, "MOVED") > moved_before
        keys = [got["headers"]["Idempotency-Key"] for got in receiver.received]
        assert keys == [answer["queued"]] * 2
    finally:
        await store.close()
