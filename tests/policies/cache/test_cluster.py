"""On Redis Cluster: every script call stays in one slot (hash tags), two gateways agree."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator

import pytest
from aiohttp import web

from gateway.store.redis import RedisStore
from policies.cache.store import CacheStore, Index, uri_key
from tests.conftest import GatewayFactory
from tests.policies.cache.conftest import config, fetch
from tests.support.ports import free_port
from tests.support.redis_server import RedisServer
from tests.support.upstream import Upstream

pytestmark = pytest.mark.cluster


def _port_with_free_bus() -> int:
    """A free port whose cluster bus port (+10000) is free too."""
    while True:
        port = free_port()
        if port >= 55000:
            continue
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port


@pytest.fixture(scope="module")
def cluster_url() -> Iterator[str]:
    if shutil.which("redis-cli") is None:
        pytest.skip("redis-cli is not installed")
    nodes = [
        RedisServer(
            _port_with_free_bus(),
            extra=["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"],
        ).start()
        for _ in range(3)
    ]
    try:
        addresses = [f"127.0.0.1:{node.port}" for node in nodes]
        subprocess.run(
            ["redis-cli", "--cluster", "create", *addresses, "--cluster-yes"],
            check=True,
            capture_output=True,
        )
        for node in nodes:
            for _ in range(100):
                if "cluster_state:ok" in node.cli("CLUSTER", "INFO"):
                    break
                time.sleep(0.05)  # a synchronous fixture: the cluster agrees on its own
        yield "redis+cluster://" + ",".join(addresses)
    finally:
        for node in nodes:
            node.cleanup()


async def test_scripts_touch_one_slot_per_call(cluster_url: str) -> None:
    store = RedisStore(cluster_url, timeout=2.0)
    try:
        cache = CacheStore(store)
        index = Index("route:r", "r")
        for n in range(20):  # URIs spread over the three masters
            uri = uri_key("route:r", "r", "h", f"/p/{n}", "")
            found = await cache.lookup(uri, "", "-", lock=True, token="t", lock_ms=5000)
            assert found.state == "L"
            stored = await cache.put(
                uri,
                vary="",
                variant="-",
                blob=b"E",
                retention_ms=60_000,
                lock_key=uri.lock("-"),
                token="t",
                max_variants=4,
                fill_start_us=found.now_us,
            )
            assert stored > 0
            assert await cache.refresh_lock(uri, "-", stored, "r", 5000) == ("L", 0)
            await cache.release(uri.lock("-"), uri, "r", pass_ms=10)
            await cache.index_add(index, uri, stored + 60_000)
            hit = await cache.lookup(uri, "", "-", lock=True, token="t", lock_ms=5000)
            assert hit.blob == b"E"
        members = await cache.index_range(index, b"[/p/", b"[/p/\xff", 100)
        assert len(members) == 20
        assert await cache.invalidate(uri_key("route:r", "r", "h", "/p/3", ""), 1000) == 1
        await cache.index_remove(index, members)
        assert await cache.index_range(index, b"-", b"+", 100) == []
    finally:
        await store.close()


async def test_two_gateways_share_a_cluster(
    make_gateway: GatewayFactory, upstream: Upstream, cluster_url: str
) -> None:
    async def slow(_: web.Request) -> web.Response:
        await asyncio.sleep(0.2)
        return web.Response(text="clustered", headers={"Cache-Control": "max-age=60"})

    upstream.route("/c", slow)
    stores = [RedisStore(cluster_url, timeout=2.0) for _ in range(2)]
    try:
        a = await make_gateway(config("ttl: 1s"), store=stores[0])
        b = await make_gateway(config("ttl: 1s"), store=stores[1])
        answers = await asyncio.gather(*(fetch((a, b)[n % 2], "/c") for n in range(10)))
        assert sorted(x.cache or "" for x in answers) == ["HIT"] * 9 + ["MISS"]
        assert upstream.hits["/c"] == 1
        async with a.admin("POST", "/-/cache/purge", json={"prefix": "/"}) as response:
            assert await response.json() == {"purged": 1}
        await asyncio.sleep(0.1)
        assert (await fetch(b, "/c")).cache == "MISS"
        await fetch(a, "/c", method="DELETE")
        assert (await fetch(b, "/c")).cache == "MISS"
    finally:
        for store in stores:
            await store.close()
