"""The cache suite's two-gateway scenarios, rerun on the Cluster and through Sentinels.

The test bodies are the policy's own (imported, not copied); this package's conftest gives
their `pair` of gateways the topology's `redis_url`, so each runs once per topology.
"""

from __future__ import annotations

from tests.policies.cache import conftest as cache
from tests.policies.cache import test_near_cache, test_two_gateways

pair = cache.pair

test_miss_then_hit_on_the_other_gateway_with_age = (
    test_two_gateways.test_miss_then_hit_on_the_other_gateway_with_age
)
# Collapsing: the fill lock and the announcement of its answer (pub/sub) across gateways.
test_50_concurrent_misses_on_two_gateways_make_one_upstream_request = (
    test_two_gateways.test_50_concurrent_misses_on_two_gateways_make_one_upstream_request
)
test_stale_after_ttl_with_one_refresh_for_40_concurrent_requests = (
    test_two_gateways.test_stale_after_ttl_with_one_refresh_for_40_concurrent_requests
)
test_purge_by_path_prefix_and_route = test_two_gateways.test_purge_by_path_prefix_and_route
test_a_successful_post_invalidates_its_uri_and_location = (
    test_two_gateways.test_a_successful_post_invalidates_its_uri_and_location
)
test_vary_variants_are_kept_apart = test_two_gateways.test_vary_variants_are_kept_apart
# Near copies dropped everywhere through pub/sub (on a Cluster: published via another node).
test_a_purge_anywhere_drops_near_copies_within_100ms = (
    test_near_cache.test_a_purge_anywhere_drops_near_copies_within_100ms
)
test_a_write_or_refresh_anywhere_drops_near_copies = (
    test_near_cache.test_a_write_or_refresh_anywhere_drops_near_copies
)
