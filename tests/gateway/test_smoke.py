from __future__ import annotations

from tests.conftest import GatewayFactory
from tests.support.upstream import Upstream

CONFIG = """
upstreams:
  backend: {targets: [UPSTREAM_URL]}
routes:
  - {name: api, match: {path: /api}, upstream: backend, strip_prefix: /api}
"""


async def test_get_is_forwarded_with_prefix_stripped(
    make_gateway: GatewayFactory, upstream: Upstream
) -> None:
    gw = await make_gateway(CONFIG)
    async with gw.request("GET", "/api/things?x=1") as response:
        assert response.status == 200
        body = await response.json()
    assert body["path"] == "/things?x=1"
    assert upstream.hits["/things"] == 1
