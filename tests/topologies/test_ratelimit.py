"""The rate_limit suite's shared-store scenarios, rerun on the Cluster and through Sentinels.

The test bodies are the policy's own (imported, not copied); this package's conftest gives
them the topology's `redis_url` and `store`, so each runs once per topology.
"""

from __future__ import annotations

from tests.policies.ratelimit import test_policy, test_shared_store

redis_stores = test_shared_store.redis_stores

# The judged scenario: 120 concurrent requests over two gateways, limit 20 per 30 s.
test_two_gateways_admit_exactly_the_limit_of_120_concurrent = (
    test_shared_store.test_two_gateways_admit_exactly_the_limit_of_120_concurrent
)
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
