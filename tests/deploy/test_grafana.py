"""deploy/grafana/gateway.json against a real Prometheus scraping a running gateway: every
query of the board, evaluated through Prometheus's HTTP API, returns data."""

from __future__ import annotations

import asyncio
import json
import math
import re
import textwrap
from pathlib import Path
from typing import Any

import aiohttp

from tests.support.harness import GatewayProcess
from tests.support.ports import free_port
from tests.support.prometheus import Prometheus
from tests.support.upstream import Upstream

BOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "gateway.json"
TOKEN = "grafana-scrape-token"
# What Grafana puts in place of the board's variables (all routes, a window that holds
# several one-second scrapes).
VARIABLES = {"$route": ".*", "$__rate_interval": "30s"}


def queries() -> list[tuple[str, str]]:
    """`(panel title, expression)` for every target of every panel."""
    board = json.loads(BOARD.read_text(encoding="utf-8"))
    out = []
    for panel in board["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            for name, value in VARIABLES.items():
                expr = expr.replace(name, value)
            out.append((panel["title"], expr))
    return out


def config(port: int, admin: int, upstream: str, redis_url: str) -> str:
    return textwrap.dedent(
        f"""\
        listen: 127.0.0.1:{port}
        admin: {{listen: 127.0.0.1:{admin}, token: {TOKEN}}}
        workers: 2
        redis: {{url: '{redis_url}'}}
        upstreams:
          backend: {{targets: ["{upstream}"]}}
          gone: {{targets: ["http://127.0.0.1:{free_port()}"]}}
        routes:
          - name: cached
            match: {{path: /c}}
            upstream: backend
            policies: [{{cache: {{ttl: 30s}}}}]
          - name: limited
            match: {{path: /l}}
            upstream: backend
            policies: [{{rate_limit: {{algorithm: token_bucket, rate: 5/s, burst: 2, key: client_ip}}}}]
          - name: private
            match: {{path: /p}}
            upstream: backend
            policies: [{{session: {{cookie: sid}}}}]
          - name: broken
            match: {{path: /b}}
            upstream: gone
        """
    )


async def traffic(url: str, rounds: int) -> None:
    """A little of everything the board shows, `rounds` times, a quarter second apart."""
    async with aiohttp.ClientSession() as session:
        for _ in range(rounds):
            for path in ("/c/x", "/c/y", "/l/x", "/l/x", "/l/x", "/p/x", "/b/x"):
                async with session.get(url + path) as response:
                    await response.read()
            await asyncio.sleep(0.25)


def has_data(result: dict[str, Any]) -> bool:
    return any(not math.isnan(float(series["value"][1])) for series in result.get("result", []))


async def test_every_query_of_the_grafana_board_returns_data(
    tmp_path: Path, upstream: Upstream, redis_url: str
) -> None:
    assert queries(), "the board has no queries"
    port, admin = free_port(), free_port()
    path = tmp_path / "gw.yaml"
    path.write_text(config(port, admin, upstream.url, redis_url))
    gateway = await GatewayProcess(str(path)).start()
    prometheus = Prometheus(f"127.0.0.1:{admin}", token=TOKEN).start()
    try:
        url = f"http://127.0.0.1:{port}"
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                f"http://127.0.0.1:{admin}/-/reload", headers={"Authorization": f"Bearer {TOKEN}"}
            ) as response,
        ):
            assert response.status == 200
        pending = dict.fromkeys(queries(), 0)
        for _ in range(12):  # up to ~24 s of traffic while Prometheus scrapes every second
            await traffic(url, 4)
            for (title, expr), _ in list(pending.items()):
                data = await prometheus.api("query", query=expr)
                if has_data(data):
                    del pending[(title, expr)]
            if not pending:
                break
        assert not pending, "queries without data:\n" + "\n".join(
            f"{title}: {expr}" for title, expr in pending
        )
        routes = await prometheus.api("label/route/values", **{"match[]": "gateway_requests_total"})
        assert {"cached", "limited", "private", "broken"} <= set(routes)
        # Every metric the board names is one the gateway exports.
        async with (
            aiohttp.ClientSession() as session,
            session.get(
                f"http://127.0.0.1:{admin}/metrics", headers={"Authorization": f"Bearer {TOKEN}"}
            ) as response,
        ):
            exported = await response.text()
        for title, expr in queries():
            for name in re.findall(r"\bgateway_\w+", expr):
                assert re.search(rf"^{name}[{{ ]", exported, re.M), f"{title}: no {name}"
    finally:
        prometheus.stop()
        await gateway.stop()
