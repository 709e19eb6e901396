"""`GET /-/dashboard` rendered by headless Chromium, as an operator's browser shows it."""

from __future__ import annotations

import hashlib
import re

from tests.conftest import GatewayFactory
from tests.support.chromium import render

TOKEN = "dashboard-admin-token-1"
API_KEY = "the-api-key-of-alpha-0042"
CONFIG = f"""\
admin: {{token: {TOKEN}}}
upstreams: {{backend: {{targets: [UPSTREAM_URL]}}}}
routes:
  - name: catalog
    match: {{path: /c}}
    upstream: backend
    policies:
      - cache: {{ttl: 30s}}
  - name: orders
    match: {{path: /o}}
    upstream: backend
    policies:
      - rate_limit: {{algorithm: sliding_window, limit: 5, window: 1m, key: header.X-API-Key}}
"""


def cell(dom: str, route: str, name: str) -> str:
    """The text of the cell of class `name` in the routes table's row of `route`."""
    row = re.search(rf'<tr data-route="{route}">(.*?)</tr>', dom, re.S)
    assert row is not None, f"no row for {route} in the rendered page"
    found = re.search(rf'<td class="{name}">([^<]*)</td>', row.group(1))
    assert found is not None, f"no {name} cell for {route}"
    return found.group(1)


async def test_the_page_shows_routes_numbers_and_top_consumers_from_its_own_host_only(
    make_gateway: GatewayFactory,
) -> None:
    gw = await make_gateway(CONFIG)
    for _ in range(20):
        async with gw.request("GET", "/c/x") as response:
            await response.read()
    for key, count in ((API_KEY, 12), ("another-key-of-bravo-77", 3)):
        for _ in range(count):
            async with gw.request("GET", "/o/x", headers={"X-API-Key": key}) as response:
                await response.read()

    page = await render(f"{gw.admin_url}/-/dashboard#token={TOKEN}")
    dom = page.dom
    assert cell(dom, "catalog", "requests") == "20"
    assert cell(dom, "catalog", "s-2xx") == "20"
    assert cell(dom, "catalog", "hit") == "95.0%"  # 19 hits of 20
    assert cell(dom, "orders", "requests") == "15"
    assert cell(dom, "orders", "s-4xx") == "7"
    assert cell(dom, "orders", "limited") == "7"
    assert float(cell(dom, "orders", "rps")) > 0
    assert float(cell(dom, "catalog", "p50")) > 0
    # The busiest consumer of `orders`, by its fingerprint, with its counts.
    board = re.search(r'<div class="board" data-route="orders">(.*?)</table>', dom, re.S)
    assert board is not None
    first = re.search(r'<tr class="consumer">(.*?)</tr>', board.group(1), re.S)
    assert first is not None
    fingerprint = "sha256:" + hashlib.sha256(API_KEY.encode()).hexdigest()[:12]
    assert f'<td class="key" title="{fingerprint}">{fingerprint}</td>' in first.group(1)
    assert '<td class="requests">12</td>' in first.group(1)
    assert '<td class="limited">7</td>' in first.group(1)
    assert API_KEY not in dom
    assert 'data-route="catalog"' not in board.group(0)  # no limiter, no board
    # Everything the page asked for came from the admin listener, the token in a header.
    admin_host = gw.admin_url.removeprefix("http://")
    assert page.hosts() == {admin_host}
    assert {url.split("?")[0].split("#")[0] for url, _ in page.requests} >= {
        f"{gw.admin_url}/-/dashboard",
        f"{gw.admin_url}/-/stats",
        f"{gw.admin_url}/-/top",
    }
    assert all(TOKEN not in url for url, initiator in page.requests if initiator)
    assert 'class="pill live"' in dom


async def test_without_the_token_the_page_asks_for_it_and_shows_nothing(
    make_gateway: GatewayFactory,
) -> None:
    gw = await make_gateway(CONFIG)
    async with gw.request("GET", "/c/x") as response:
        await response.read()
    async with gw.admin("GET", "/-/dashboard") as response:
        assert response.status == 200  # the page: no data in it
        policy = response.headers["Content-Security-Policy"]
        assert "default-src 'none'" in policy
        assert "connect-src 'self'" in policy
    async with gw.admin("GET", "/-/stats") as response:
        assert response.status == 401
    page = await render(f"{gw.admin_url}/-/dashboard", budget_ms=2000)
    assert 'id="login" class="open"' in page.dom
    assert "token needed" in page.dom
    assert 'data-route="catalog"' not in page.dom
