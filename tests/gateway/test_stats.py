"""`GET /-/stats`: per-route figures read from the metrics' buffers, summed over workers."""

from __future__ import annotations

import textwrap
from pathlib import Path

import aiohttp
import pytest

from gateway.admin.stats import quantile
from tests.conftest import GatewayFactory
from tests.support.harness import GatewayProcess
from tests.support.ports import free_port
from tests.support.upstream import Upstream

CONFIG = """\
upstreams: {backend: {targets: [UPSTREAM_URL]}}
routes:
  - name: cached
    match: {path: /c}
    upstream: backend
    policies:
      - cache: {ttl: 30s}
  - name: limited
    match: {path: /l}
    upstream: backend
    policies:
      - rate_limit: {algorithm: sliding_window, limit: 3, window: 1m, key: client_ip}
  - name: idle
    match: {path: /idle}
    upstream: backend
"""


def test_quantiles_interpolate_within_buckets_like_histogram_quantile() -> None:
    bounds = (0.001, 0.01, 0.1)
    assert quantile(0.5, bounds, [0, 0, 0, 0]) is None
    assert quantile(0.5, bounds, [10, 0, 0, 0]) == 0.0005
    assert quantile(0.5, bounds, [0, 10, 0, 0]) == pytest.approx(0.0055)
    assert quantile(0.99, bounds, [50, 0, 0, 50]) == 0.1  # above the last bound: the bound


async def test_stats_count_routes_statuses_cache_and_limits(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(CONFIG)
    for path, times in (("/c/x", 4), ("/l/x", 5), ("/nowhere", 2)):
        for _ in range(times):
            async with gw.request("GET", path) as response:
                await response.read()
    async with gw.admin("GET", "/-/stats") as response:
        assert response.status == 200
        stats = await response.json()
    assert list(stats["routes"]) == ["cached", "limited", "idle"]
    cached, limited, idle = (stats["routes"][name] for name in ("cached", "limited", "idle"))
    assert cached["requests"] == 4
    assert cached["status"] == {"1xx": 0, "2xx": 4, "3xx": 0, "4xx": 0, "5xx": 0}
    assert cached["cache"] == {"hits": 3, "misses": 1, "stale": 0}
    assert limited["requests"] == 5
    assert limited["status"]["2xx"] == 3
    assert limited["status"]["4xx"] == 2
    assert limited["rate_limited"] == 2
    assert idle["requests"] == 0
    assert idle["latency_ms"] == {"p50": None, "p99": None}
    assert 0 < cached["latency_ms"]["p50"] <= cached["latency_ms"]["p99"]
    assert cached["rps"] > 0
    assert stats["total"]["requests"] == 11  # the two unrouted 404s too
    assert stats["total"]["status"]["4xx"] == 4
    assert stats["total"]["rate_limited"] == 2
    assert stats["workers"] == 1
    assert stats["windows"] == {"rps_s": 10, "latency_s": 60}


async def test_stats_are_summed_over_the_workers(
    tmp_path: Path, upstream: Upstream, redis_url: str
) -> None:
    port, admin = free_port(), free_port()
    config = tmp_path / "gw.yaml"
    config.write_text(
        f"listen: 127.0.0.1:{port}\nadmin: {{listen: 127.0.0.1:{admin}}}\nworkers: 2\n"
        f"redis: {{url: '{redis_url}'}}\n"
        + textwrap.dedent(CONFIG).replace("UPSTREAM_URL", upstream.url)
    )
    gateway = await GatewayProcess(str(config)).start()
    try:
        connector = aiohttp.TCPConnector(force_close=True)  # new connections spread over workers
        async with aiohttp.ClientSession(connector=connector) as session:
            for _ in range(40):
                async with session.get(f"http://127.0.0.1:{port}/idle/x") as response:
                    assert response.status == 200
            for _ in range(4):
                async with session.get(f"http://127.0.0.1:{port}/l/x") as response:
                    await response.read()
            async with session.get(f"http://127.0.0.1:{admin}/-/stats") as response:
                stats = await response.json()
        assert stats["workers"] == 2
        assert stats["routes"]["idle"]["requests"] == 40
        assert stats["routes"]["idle"]["status"]["2xx"] == 40
        assert stats["total"]["requests"] == 44
        assert stats["routes"]["limited"]["rate_limited"] == 1
        # A rate-limit script call per request (one after the other; the first EVALSHA may
        # be answered NOSCRIPT and followed by an EVAL): timed, none failed.
        assert stats["store"]["ops"]["rate_limit"]["calls"] in (4, 5)
        assert stats["store"]["errors"] == 0
        assert stats["store"]["latency_ms"]["p50"] > 0
    finally:
        await gateway.stop()
