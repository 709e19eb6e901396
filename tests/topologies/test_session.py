"""The session suite on the Cluster and through Sentinels: the policy's own tests, rerun, plus
the sliding expiry checked on the server that holds the session."""

from __future__ import annotations

from collections import Counter
from typing import Any

from gateway.store.redis import RedisStore
from tests.conftest import GatewayFactory
from tests.policies.session import test_policy, test_redis
from tests.policies.session.conftest import command_calls, header_values
from tests.topologies.conftest import Topology

test_cookie_session_forwards_identity_and_replaces_a_spoofed_one = (
    test_policy.test_cookie_session_forwards_identity_and_replaces_a_spoofed_one
)
test_bearer_session_forwards_identity_and_drops_the_token = (
    test_policy.test_bearer_session_forwards_identity_and_drops_the_token
)
test_no_unknown_expired_or_deleted_session_is_401 = (
    test_policy.test_no_unknown_expired_or_deleted_session_is_401
)
test_require_mismatch_is_403_and_a_list_means_any_of = (
    test_policy.test_require_mismatch_is_403_and_a_list_means_any_of
)
test_a_named_definition_serves_several_routes = (
    test_policy.test_a_named_definition_serves_several_routes
)


def _calls(topology: Topology) -> Counter[str]:
    """Commands run so far on every master, summed (a session lives on one of them)."""
    total: Counter[str] = Counter()
    for server in topology.master_servers():
        total += command_calls(server)
    return total


async def test_ttl_grows_on_use_at_most_once_per_refresh_every(
    make_gateway: GatewayFactory, store: RedisStore, topology: Topology
) -> None:
    gw = await make_gateway(test_redis.CONFIG, store=store)
    sid = "Ab3_-" * 8
    key = f"session:{sid}"
    topology.cli("HSET", key, "user_id", "42", "role", "admin")  # exactly as the app writes it
    topology.cli("EXPIRE", key, "600")
    cookie = {"Cookie": f"sid={sid}"}
    before = _calls(topology)

    async def get() -> tuple[int, Any]:
        async with gw.request("GET", "/sliding", headers=cookie) as response:
            return response.status, await response.json()

    for _ in range(20):
        status, echo = await get()
        assert (status, header_values(echo, "X-User-Id")) == (200, ["42"])
    assert 1_740_000 < int(topology.cli("PTTL", key)) <= 1_800_000  # 10 minutes grew to 30
    assert (_calls(topology) - before)["pexpire"] == 1  # once, not 20 times

    topology.cli("PEXPIRE", key, "1700000")  # 100 s after the refresh: due again
    for _ in range(5):
        await get()
    assert int(topology.cli("PTTL", key)) > 1_790_000
    assert (_calls(topology) - before)["pexpire"] == 3  # ours, and the gateway's second


async def test_deleted_on_one_gateway_is_unknown_to_the_other_at_once(
    make_gateway: GatewayFactory, topology: Topology
) -> None:
    stores = [RedisStore(topology.url, timeout=1.0) for _ in range(2)]
    try:
        a, b = [await make_gateway(test_redis.CONFIG, store=store) for store in stores]
        sid = "Zz9_-" * 8
        topology.cli("HSET", f"session:{sid}", "user_id", "7")
        for gw in (a, b):
            async with gw.request("GET", "/account", headers={"Cookie": f"sid={sid}"}) as r:
                assert r.status == 200
        assert await stores[0].delete(f"session:{sid}") == 1  # logged out through one
        async with b.request("GET", "/account", headers={"Cookie": f"sid={sid}"}) as r:
            assert (r.status, (await r.json())["error"]) == (401, "unauthenticated")
    finally:
        for store in stores:
            await store.close()
