"""A Cluster master lost and back: only the keys it serves go without the store meanwhile.

A master of the 3-master Cluster (no replicas) is killed and restarted on its port, within the
cluster's node timeout (the others never declare it failed, so they keep serving their slots).
Requests whose keys it serves get the documented answers at once, the others are decided as
usual, `/-/ready` is 503 (every master must answer), and once it is back the same stores use
it again without a restart.
"""

from __future__ import annotations

import time

import pytest

from gateway.store.redis import RedisStore
from tests.conftest import GatewayFactory
from tests.support.harness import InProcessGateway
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
      - rate_limit: {algorithm: sliding_window, limit: 1000, window: 1m, key: header.X-Client}
"""
CLIENTS = [f"client-{n}" for n in range(24)]


async def _counted(gw: InProcessGateway, client: str) -> bool:
    """Whether the request was decided with the store (it is let through either way)."""
    started = time.monotonic()
    async with gw.request("GET", "/rl", headers={"X-Client": client}) as response:
        assert response.status == 200
        counted = "RateLimit" in response.headers
    assert time.monotonic() - started < 1.0
    return counted


async def _ready(gw: InProcessGateway) -> int:
    async with gw.admin("GET", "/-/ready") as response:
        return int(response.status)


async def test_a_master_lost_and_back_only_takes_its_own_slots_away(
    make_gateway: GatewayFactory, cluster: Topology
) -> None:
    group = cluster.cluster
    assert group is not None
    store = RedisStore(cluster.url, timeout=0.25)
    try:
        gw = await make_gateway(CONFIG, store=store)
        assert [await _counted(gw, client) for client in CLIENTS] == [True] * len(CLIENTS)
        assert await _ready(gw) == 200
        holders = set(group.keys().values())
        assert len(holders) == 3  # the clients' keys are spread over every master
        victim = next(node for node in group.nodes if node.port == group.ports[0])

        victim.kill()
        during = {client: await _counted(gw, client) for client in CLIENTS}
        assert await _ready(gw) == 503
        victim.start()  # same port, same nodes.conf: it rejoins with its slots (its data gone)
        group.ensure_healthy()

        # The keys the other masters hold were decided as usual, only the victim's were not.
        assert 0 < sum(during.values()) < len(CLIENTS)
        assert store.breaker.state.name == "CLOSED"  # successes in between kept it closed
        assert await _ready(gw) == 200
        assert [await _counted(gw, client) for client in CLIENTS] == [True] * len(CLIENTS)
    finally:
        await store.close()
