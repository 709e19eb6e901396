"""`GET /-/top`: top consumers counted in the rate-limit script, read cluster-wide.

Two real `gateway run` processes on one redis-server, three clients with known counts: either
admin listener ranks them with exact requests and rejections. The same on `memory://` for one
gateway. API keys appear nowhere whole: not in /-/top, the dashboard or the access log.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import textwrap
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import GatewayFactory
from tests.support.harness import GatewayProcess
from tests.support.polling import eventually
from tests.support.ports import free_port
from tests.support.upstream import Upstream

TOKEN = "top-secret-admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
# Three API keys and how many requests each sends: 5 admitted per minute each.
CLIENTS = {"alpha-key-0123456789": 12, "bravo-key-0123456789": 7, "charlie-key-012345678": 3}


def fingerprint(key: str) -> str:
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()[:12]


EXPECTED = [
    {"key": fingerprint(key), "requests": count, "rejected": max(0, count - 5)}
    for key, count in CLIENTS.items()
]

ROUTES = """\
upstreams:
  backend: {targets: ["UPSTREAM_URL"]}
routes:
  - name: api
    match: {path: /api}
    upstream: backend
    policies:
      - rate_limit: {algorithm: sliding_window, limit: 5, window: 1m, key: header.X-API-Key}
  - name: by-ip
    match: {path: /ip}
    upstream: backend
    policies:
      - rate_limit: {algorithm: token_bucket, rate: 1/s, burst: 2, key: client_ip}
  - name: open
    match: {path: /open}
    upstream: backend
"""


async def send(url: str, key: str) -> int:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{url}/api/x", headers={"X-API-Key": key}) as response,
    ):
        await response.read()
        return response.status


async def admin_get(url: str, path: str, **params: str) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(url + path, params=params, headers=AUTH) as response,
    ):
        return response.status, await response.json(content_type=None)


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    started: list[GatewayProcess] = []

    async def start(text: str, name: str) -> tuple[GatewayProcess, str, str]:
        port, admin = free_port(), free_port()
        config = tmp_path / f"{name}.yaml"
        config.write_text(
            f"listen: 127.0.0.1:{port}\nadmin: {{listen: 127.0.0.1:{admin}, token: {TOKEN}}}\n"
            + text
        )
        process = await GatewayProcess(str(config)).start()
        started.append(process)
        return process, f"http://127.0.0.1:{port}", f"http://127.0.0.1:{admin}"

    yield start
    for process in started:
        await process.stop()


async def test_two_gateways_on_one_redis_rank_three_clients_exactly(
    running: Callable[..., Any], upstream: Upstream, redis_url: str
) -> None:
    text = ROUTES.replace("UPSTREAM_URL", upstream.url) + f"redis: {{url: '{redis_url}'}}\n"
    one, one_url, one_admin = await running(text + "workers: 2\n", "one")
    two, two_url, two_admin = await running(text, "two")
    statuses = []
    for key, count in CLIENTS.items():  # in turn over both gateways, one client at a time
        for i in range(count):
            statuses.append(await send((one_url, two_url)[i % 2], key))
    assert statuses.count(429) == sum(e["rejected"] for e in EXPECTED)
    for admin in (one_admin, two_admin):
        status, body = await admin_get(admin, "/-/top", route="api", window="1m", n="10")
        assert status == 200, body
        assert body["route"] == "api"
        assert body["window"] == "1m"
        assert body["key"] == "header.X-API-Key"
        assert body["consumers"] == EXPECTED
        status, body = await admin_get(admin, "/-/top", route="api", n="2")
        assert body["consumers"] == EXPECTED[:2]
    # The keys themselves are nowhere: not in the answer, the dashboard or the access log.
    texts = []
    for admin in (one_admin, two_admin):
        texts.append(json.dumps((await admin_get(admin, "/-/top", route="api"))[1]))
        async with aiohttp.ClientSession() as session, session.get(admin + "/-/dashboard") as r:
            texts.append(await r.text())

    def access() -> str:
        return "".join(one.stdout_lines + two.stdout_lines)

    await eventually(
        lambda: access().count('"route":"api"') == sum(CLIENTS.values()), "every access line"
    )
    logged = access() + one.stderr + two.stderr
    for key in CLIENTS:
        assert key not in logged
        assert all(key not in text for text in texts)


async def test_memory_store_counts_the_same_and_shows_client_ips_as_they_are(
    make_gateway: GatewayFactory,
) -> None:
    gw = await make_gateway(ROUTES.replace('"UPSTREAM_URL"', "UPSTREAM_URL"))
    for key, count in CLIENTS.items():
        for _ in range(count):
            async with gw.request("GET", "/api/x", headers={"X-API-Key": key}) as response:
                await response.read()
    async with gw.admin("GET", "/-/top?route=api&window=10s") as response:
        assert response.status == 200
        body = await response.json()
    assert body["consumers"] == EXPECTED
    assert body["window"] == "10s"

    # Three client addresses on loopback, with known counts: shown as they are.
    counts = {"127.0.0.2": 4, "127.0.0.3": 1, "127.0.0.4": 2}
    for ip, count in counts.items():
        connector = aiohttp.TCPConnector(local_addr=(ip, 0))
        async with aiohttp.ClientSession(connector=connector) as session:
            for _ in range(count):
                async with session.get(gw.url + "/ip/x") as response:
                    await response.read()
    async with gw.admin("GET", "/-/top?route=by-ip") as response:
        body = await response.json()
    assert body["key"] == "client_ip"
    assert body["consumers"] == [
        {"key": "127.0.0.2", "requests": 4, "rejected": 2},
        {"key": "127.0.0.4", "requests": 2, "rejected": 0},
        {"key": "127.0.0.3", "requests": 1, "rejected": 0},
    ]
    logged = json.dumps(gw.access_lines())
    assert all(key not in logged for key in CLIENTS)


@pytest.mark.parametrize(
    ("query", "status", "error"),
    [
        ("route=nope", 404, "unknown_route"),
        ("route=open", 404, "no_rate_limit"),
        ("route=api&policy=other", 404, "no_rate_limit"),
        ("", 400, "invalid_request"),
        ("route=api&window=soon", 400, "invalid_request"),
        ("route=api&window=1s", 400, "invalid_request"),
        ("route=api&window=2h", 400, "invalid_request"),
        ("route=api&n=0", 400, "invalid_request"),
        ("route=api&n=101", 400, "invalid_request"),
        ("route=api&n=ten", 400, "invalid_request"),
    ],
)
async def test_unknown_routes_are_404_and_bad_windows_or_counts_400(
    make_gateway: GatewayFactory, query: str, status: int, error: str
) -> None:
    gw = await make_gateway(ROUTES.replace('"UPSTREAM_URL"', "UPSTREAM_URL"))
    async with gw.admin("GET", "/-/top?" + query) as response:
        assert response.status == status
        assert (await response.json())["error"] == error


async def test_a_definition_shared_by_two_routes_counts_each_route_apart(
    make_gateway: GatewayFactory,
) -> None:
    gw = await make_gateway(
        textwrap.dedent(
            """\
            upstreams: {backend: {targets: [UPSTREAM_URL]}}
            policies:
              shared: {rate_limit: {algorithm: sliding_window, limit: 3, window: 1m, key: session.user}}
            routes:
              - {name: a, match: {path: /a}, upstream: backend, policies: [shared]}
              - {name: b, match: {path: /b}, upstream: backend, policies: [shared]}
            """
        )
    )

    # Concurrent requests of one identity over both routes share one bucket, and are still
    # counted on their own route's board.
    async def get(path: str) -> int:
        async with gw.request("GET", path) as response:
            await response.read()
            return response.status

    statuses = await asyncio.gather(*(get(("/a/x", "/b/x")[i % 3 == 2]) for i in range(6)))
    assert sorted(statuses) == [200, 200, 200, 429, 429, 429]
    tops = {}
    for route in ("a", "b"):
        async with gw.admin("GET", f"/-/top?route={route}") as response:
            tops[route] = (await response.json())["consumers"]
    assert [c["key"] for c in tops["a"] + tops["b"]] == ["(none)", "(none)"]
    assert tops["a"][0]["requests"] == 4
    assert tops["b"][0]["requests"] == 2
    assert tops["a"][0]["rejected"] + tops["b"][0]["rejected"] == 3
