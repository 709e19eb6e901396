"""Upstream pools against a real upstream that counts the connections it accepts: the cap,
the bounded wait queue and its 503, reuse under concurrency, the pool metrics."""

from __future__ import annotations

import asyncio
import json
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from gateway.upstream.pool import Target
from tests.support.harness import GatewayProcess, InProcessGateway, start_gateway
from tests.support.polling import eventually
from tests.support.ports import free_port


class CountingUpstream:
    """HTTP/1.1 keep-alive on a real socket; `/hold` answers once `release` is set;
    `?close` answers with `Connection: close`, `?drop` closes after a keep-alive answer. Counts accepted and concurrently open connections."""

    def __init__(self) -> None:
        self.accepted = 0
        self.open = 0
        self.peak = 0
        self.requests = 0
        self.release = asyncio.Event()
        self.url = ""
        self._server: asyncio.Server | None = None

    async def start(self) -> CountingUpstream:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"
        return self

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        self.open += 1
        self.peak = max(self.peak, self.open)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                self.requests += 1
                target = head.split(b" ", 2)[1]
                if target.startswith(b"/hold"):
                    await self.release.wait()
                close = target.endswith(b"?close")
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n"
                    + (b"Connection: close\r\n" if close else b"")
                    + b"\r\nok"
                )
                await writer.drain()
                if close or target.endswith(b"?drop"):  # drop: closes without saying so
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.open -= 1
            writer.close()

    async def close(self) -> None:
        self.release.set()
        if self._server is not None:
            self._server.close()


@pytest.fixture
async def counting() -> AsyncIterator[CountingUpstream]:
    upstream = await CountingUpstream().start()
    yield upstream
    await upstream.close()


@pytest.fixture
async def gateways() -> AsyncIterator[list[InProcessGateway]]:
    started: list[InProcessGateway] = []
    yield started
    for gateway in started:
        await gateway.close()


async def gateway_for(
    counting: CountingUpstream, started: list[InProcessGateway], pool: str
) -> InProcessGateway:
    text = f"""
upstreams:
  backend: {{targets: ["UPSTREAM_URL"], {pool}}}
routes:
  - {{name: api, match: {{path: /}}, upstream: backend}}
"""
    gateway = await start_gateway(text, counting.url)
    started.append(gateway)
    return gateway


def target_of(gateway: InProcessGateway) -> Target:
    return gateway.runtime.upstreams["backend"].targets[0]


async def get(gateway: InProcessGateway, path: str) -> tuple[int, dict[str, str], bytes]:
    async with gateway.request("GET", path) as response:
        return response.status, dict(response.headers), await response.read()


async def test_max_connections_caps_the_connections_the_upstream_sees(
    counting: CountingUpstream, gateways: list[InProcessGateway]
) -> None:
    gateway = await gateway_for(counting, gateways, "max_connections: 3")
    target = target_of(gateway)
    calls = [asyncio.ensure_future(get(gateway, f"/hold/{n}")) for n in range(20)]
    await eventually(lambda: target.pending == 17, "17 requests waiting")
    assert (counting.accepted, counting.open, target.open) == (3, 3, 3)
    counting.release.set()
    answers = await asyncio.gather(*calls)
    assert [status for status, _, _ in answers] == [200] * 20
    assert counting.requests == 20
    assert counting.accepted == 3
    assert counting.peak == 3


async def test_a_closed_connection_gives_its_slot_back(
    counting: CountingUpstream, gateways: list[InProcessGateway]
) -> None:
    gateway = await gateway_for(counting, gateways, "max_connections: 1")
    for _ in range(5):  # each answer closes its connection: the next needs the slot again
        assert (await get(gateway, "/x?close"))[0] == 200
    assert counting.accepted == 5
    await eventually(lambda: target_of(gateway).open == 0, "the slot given back")


async def test_connections_lost_after_their_answer_cost_no_request(
    counting: CountingUpstream, gateways: list[InProcessGateway]
) -> None:
    # The waiters are handed connections the upstream is closing: a waiter that finds its
    # connection closed goes round again, one that writes into it is retried on a fresh one.
    gateway = await gateway_for(counting, gateways, "max_connections: 2")
    answers = await asyncio.gather(*(get(gateway, f"/{n}?drop") for n in range(20)))
    assert [status for status, _, _ in answers] == [200] * 20
    assert counting.peak <= 2
    await eventually(lambda: target_of(gateway).open == 0, "every slot given back")


async def test_pending_over_max_pending_is_503_with_retry_after(
    counting: CountingUpstream, gateways: list[InProcessGateway]
) -> None:
    gateway = await gateway_for(counting, gateways, "max_connections: 1, max_pending: 2")
    target = target_of(gateway)
    held = [asyncio.ensure_future(get(gateway, f"/hold/{n}")) for n in range(3)]
    await eventually(lambda: target.pending == 2, "two requests waiting")
    status, headers, body = await get(gateway, "/over")
    assert status == 503
    assert headers["Retry-After"] == "1"
    assert headers["Content-Type"].startswith("application/json")
    assert json.loads(body)["error"] == "upstream_overloaded"
    counting.release.set()
    assert [status for status, _, _ in await asyncio.gather(*held)] == [200] * 3
    assert counting.accepted == 1


async def test_a_wait_is_bounded_by_the_connect_timeout(
    counting: CountingUpstream, gateways: list[InProcessGateway]
) -> None:
    pool = "max_connections: 1, timeouts: {connect: 200ms}"
    gateway = await gateway_for(counting, gateways, pool)
    held = asyncio.ensure_future(get(gateway, "/hold"))
    await eventually(lambda: counting.requests == 1, "the first request upstream")
    status, _headers, body = await get(gateway, "/waits")
    assert (status, json.loads(body)["error"]) == (503, "upstream_overloaded")
    assert target_of(gateway).pending == 0
    counting.release.set()
    assert (await held)[0] == 200


@pytest.mark.parametrize(("pool", "reused"), [("", True), ("max_idle: 8", False)])
async def test_the_idle_pool_holds_what_concurrent_traffic_needs(
    counting: CountingUpstream, gateways: list[InProcessGateway], pool: str, reused: bool
) -> None:
    # The default keeps every connection the traffic needed; a small max_idle (the old
    # default was 64, at 2,000 clients) closes most of them and opens new ones each round.
    gateway = await gateway_for(counting, gateways, pool or "keepalive: 30s")
    clients, rounds = 100, 6
    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one() -> int:
            async with session.get(gateway.url + "/x") as response:
                await response.read()
                return response.status

        for _ in range(rounds):  # warm-up: the pool grows to the concurrency it sees
            await asyncio.gather(*(one() for _ in range(clients)))
        warm = counting.accepted
        for _ in range(rounds):
            assert set(await asyncio.gather(*(one() for _ in range(clients)))) == {200}
    new_per_request = (counting.accepted - warm) / (clients * rounds)
    if reused:
        assert counting.peak <= clients
        assert new_per_request < 0.01
    else:
        assert new_per_request > 0.5


async def test_pool_metrics_in_metrics(counting: CountingUpstream, tmp_path: Path) -> None:
    port, admin = free_port(), free_port()
    config = tmp_path / "gw.yaml"
    config.write_text(
        textwrap.dedent(
            f"""\
            listen: 127.0.0.1:{port}
            admin: {{listen: 127.0.0.1:{admin}}}
            upstreams:
              backend: {{targets: ["{counting.url}"], max_connections: 1}}
            routes:
              - {{name: api, match: {{path: /}}, upstream: backend}}
            """
        )
    )
    gateway = await GatewayProcess(str(config)).start()
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(3):
                async with session.get(f"http://127.0.0.1:{port}/x") as response:
                    assert response.status == 200
            held = [
                asyncio.ensure_future(session.get(f"http://127.0.0.1:{port}/hold/{n}"))
                for n in range(3)
            ]
            labels = f'target="{counting.url}",upstream="backend"'
            wanted = [
                f"gateway_upstream_connections_open{{{labels}}} 1.0",
                f"gateway_upstream_connections_idle{{{labels}}} 0.0",
                f"gateway_upstream_requests_pending{{{labels}}} 2.0",
                f"gateway_upstream_connections_opened_total{{{labels}}} 1.0",
            ]
            text = ""

            async def scrape() -> bool:
                nonlocal text
                async with session.get(f"http://127.0.0.1:{admin}/metrics") as response:
                    text = await response.text()
                return all(line in text for line in wanted)

            for _ in range(100):
                if await scrape():
                    break
                await asyncio.sleep(0.05)
            assert all(line in text for line in wanted), text
            counting.release.set()
            for response in await asyncio.gather(*held):
                assert response.status == 200
                response.release()
            wanted[1] = f"gateway_upstream_connections_idle{{{labels}}} 1.0"
            wanted[2] = f"gateway_upstream_requests_pending{{{labels}}} 0.0"
            for _ in range(100):
                if await scrape():
                    break
                await asyncio.sleep(0.05)
            assert all(line in text for line in wanted), text
    finally:
        await gateway.stop()
