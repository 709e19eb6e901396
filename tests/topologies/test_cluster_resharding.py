"""Slots moving between masters while gateways use them: MOVED and ASK are followed.

Every slot holding a key the policies use is moved to another master (keys migrated with
them), with the gateways' stores already holding the old slot map. Redis's own error counters
(`INFO errorstats` on the source nodes) show the redirections were met and followed.
"""

from __future__ import annotations

import pytest
from aiohttp import web

from gateway.store.redis import RedisStore
from tests.conftest import GatewayFactory
from tests.policies.cache.conftest import eventually
from tests.support.harness import InProcessGateway
from tests.support.redis_cluster import RedisClusterGroup, cli
from tests.support.upstream import Upstream
from tests.topologies.conftest import Topology

pytestmark = pytest.mark.cluster

CONFIG = """
upstreams:
  backend: {targets: [UPSTREAM_URL]}
routes:
  - name: limited
    match: {path: /rl}
    upstream: backend
    policies:
      - rate_limit: {algorithm: sliding_window, limit: 6, window: 1m, key: header.X-Client}
  - name: cached
    match: {path: /c}
    upstream: backend
    policies:
      - cache: {ttl: 60s, near_cache: 0}
  - name: account
    match: {path: /s}
    upstream: backend
    policies:
      - session: {cookie: sid, forward: {user_id: X-User-Id}}
"""
SID = "Re5hard-ed_" * 4


def _redirects(group: RedisClusterGroup, kind: str) -> int:
    """How many `kind` (MOVED, ASK) error replies the nodes have sent since they started."""
    total = 0
    for port in group.ports:
        for line in cli(port, "INFO", "errorstats").splitlines():
            if line.startswith(f"errorstat_{kind}:count="):
                total += int(line.split("=", 1)[1])
    return total


async def _status(gw: InProcessGateway, path: str, **headers: str) -> tuple[int, str]:
    """The status, and what shows the store was used: `X-Cache`, or "counted" when the rate
    limit sent its fields (without a store it lets requests through without them)."""
    async with gw.request("GET", path, headers=headers) as response:
        await response.read()
        counted = "counted" if "RateLimit" in response.headers else ""
        return response.status, response.headers.get("X-Cache", counted)


async def _start(
    make_gateway: GatewayFactory, upstream: Upstream, cluster: Topology
) -> tuple[list[RedisStore], list[InProcessGateway]]:
    async def cacheable(_: web.Request) -> web.Response:
        return web.Response(text="cached", headers={"Cache-Control": "max-age=60"})

    upstream.route("/c", cacheable)
    cluster.cli("HSET", f"session:{SID}", "user_id", "42")
    stores = [RedisStore(cluster.url, timeout=1.0) for _ in range(2)]
    gateways = [await make_gateway(CONFIG, store=store) for store in stores]
    assert await _status(gateways[0], "/c") == (200, "MISS")

    async def stored() -> bool:  # the entry is written as the answer streams out
        return await _status(gateways[1], "/c") == (200, "HIT")

    await eventually(stored)
    return stores, gateways


async def _use(gateways: list[InProcessGateway]) -> list[tuple[int, str]]:
    """One request of each kind through each gateway."""
    answers = []
    for gw in gateways:
        answers.append(await _status(gw, "/rl", **{"X-Client": "alice"}))
        answers.append(await _status(gw, "/c"))
        answers.append(await _status(gw, "/s", Cookie=f"sid={SID}"))
    return answers


def _slots_in_use(group: RedisClusterGroup) -> dict[int, int]:
    """Slot -> port of its master, for every key stored now."""
    return {group.key_slot(key): port for key, port in group.keys().items()}


def _elsewhere(group: RedisClusterGroup, port: int) -> int:
    return group.ports[(group.ports.index(port) + 1) % len(group.ports)]


async def test_policies_follow_moved_after_their_slots_were_resharded(
    make_gateway: GatewayFactory, upstream: Upstream, cluster: Topology
) -> None:
    group = cluster.cluster
    assert group is not None
    stores, gateways = await _start(make_gateway, upstream, cluster)
    try:
        first = await _use(gateways)
        assert first == [(200, "counted"), (200, "HIT"), (200, "")] * 2
        slots = _slots_in_use(group)
        assert len(slots) >= 3  # rate limit, cache entry and session, at least
        moved_before = _redirects(group, "MOVED")
        for slot, owner in slots.items():
            group.move_slot(slot, _elsewhere(group, owner))
        assert all(group.owner(slot) != owner for slot, owner in slots.items())

        # Both stores still have the old map: the first calls are redirected and followed.
        second = await _use(gateways)
        assert second == [(200, "counted"), (200, "HIT"), (200, "")] * 2
        assert _redirects(group, "MOVED") > moved_before
        # The counts moved with their keys: 4 of 6 admitted, two more places, then 429.
        more = [
            (await _status(gateways[n % 2], "/rl", **{"X-Client": "alice"}))[0] for n in range(3)
        ]
        assert more == [200, 200, 429]
        # And the maps were learnt: no more redirections for the same keys.
        settled = _redirects(group, "MOVED")
        await _use(gateways)
        assert _redirects(group, "MOVED") == settled
        for store in stores:
            assert store.breaker.state.name == "CLOSED"
    finally:
        for store in stores:
            await store.close()


async def test_keys_already_migrated_are_followed_with_ask(
    make_gateway: GatewayFactory, upstream: Upstream, cluster: Topology
) -> None:
    group = cluster.cluster
    assert group is not None
    stores, gateways = await _start(make_gateway, upstream, cluster)
    try:
        assert (
            await _use(gateways) == [(200, "counted"), (200, "HIT"), (200, "")] * 2
        )  # 2 of 6 for alice
        slots = _slots_in_use(group)
        targets = {slot: _elsewhere(group, owner) for slot, owner in slots.items()}
        # Halfway: the slots are migrating and their keys already on the target, but the
        # source still owns them: it answers ASK, the target serves only after ASKING.
        asks_before = _redirects(group, "ASK")
        for slot, target in targets.items():
            source = group.begin_move(slot, target)
            assert group.migrate_keys(slot, source, target) >= 1
        during = await _use(gateways)
        # Rate limit and session (one key each) are served by the target. The cache lookup
        # names keys that do not exist (no fill lock is held): Redis refuses a multi-key
        # command on a slot half moved (TRYAGAIN) until the move ends, so it steps aside.
        assert during == [(200, "counted"), (200, "BYPASS"), (200, "")] * 2
        assert _redirects(group, "ASK") > asks_before
        for slot, target in targets.items():
            group.finish_move(slot, target)
        after = [
            (await _status(gateways[n % 2], "/rl", **{"X-Client": "alice"}))[0] for n in range(3)
        ]
        assert after == [200, 200, 429]  # 4 admitted so far, two places left
    finally:
        for store in stores:
            await store.close()
