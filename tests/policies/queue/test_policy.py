"""The `queue` policy through a real gateway (in process) to a real upstream, on both stores."""

from __future__ import annotations

import asyncio

from gateway.store import Store
from tests.conftest import GatewayFactory
from tests.policies.queue.conftest import Receiver, config, post, queue_status, until
from tests.support.upstream import Upstream


async def test_accepted_then_delivered_with_its_idempotency_key(
    store: Store, make_gateway: GatewayFactory, upstream: Upstream
) -> None:
    receiver = Receiver()
    upstream.route("/hooks/new", receiver)
    gateway = await make_gateway(config(), store=store)
    status, answer = await post(gateway, "/hooks/new?x=1", b'{"event": "paid"}')
    assert status == 202
    queued = answer["queued"]

    async def delivered() -> bool:
        return (await queue_status(gateway))["delivered"] == 1

    await until(delivered)
    (got,) = receiver.received
    assert got["headers"]["Idempotency-Key"] == queued
    assert got["body"] == b'{"event": "paid"}'
    assert got["path"] == "/hooks/new?x=1"
    assert got["headers"]["X-Forwarded-For"] == "127.0.0.1"  # the proxy's header hygiene
    state = await queue_status(gateway)
    assert (state["backlog"], state["in_flight"], state["dead"]) == (0, 0, 0)
    async with gateway.admin("GET", "/metrics") as response:
        metrics = await response.text()
    assert 'gateway_queue_accepted_total{route="hooks"} 1.0' in metrics
    assert 'gateway_queue_delivered_total{route="hooks"} 1.0' in metrics
    assert 'gateway_queue_backlog{route="hooks"} 0.0' in metrics


async def test_a_body_over_max_body_is_413_and_not_queued(
    store: Store, make_gateway: GatewayFactory, upstream: Upstream
) -> None:
    gateway = await make_gateway(config(), store=store)
    async with gateway.request("POST", "/hooks/x", data=b"x" * 1025) as response:
        assert response.status == 413
        assert (await response.json())["error"] == "payload_too_large"
    assert (await post(gateway, "/hooks/x", b"x" * 1024))[0] == 202
    assert (await queue_status(gateway))["delivered"] in (0, 1)
    assert sum(upstream.hits.values()) <= 1


async def test_a_400_is_dead_lettered_not_retried_and_replay_sends_it_again(
    store: Store, make_gateway: GatewayFactory, upstream: Upstream
) -> None:
    receiver = Receiver(400)
    upstream.route("/hooks/bad", receiver)
    gateway = await make_gateway(config(), store=store)
    _, answer = await post(gateway, "/hooks/bad", b"v1")
    queued = answer["queued"]

    async def dead() -> bool:
        return (await queue_status(gateway))["dead"] == 1

    await until(dead)
    state = await queue_status(gateway)
    (letter,) = state["dead_letters"]
    assert (letter["id"], letter["attempts"], letter["status"]) == (queued, 1, "400")
    assert letter["error"] == "answer 400"
    assert (letter["method"], letter["target"]) == ("POST", "/hooks/bad")
    await asyncio.sleep(0.3)  # retries would come within 50-200 ms: none may
    assert len(receiver.received) == 1

    async with gateway.admin("POST", "/-/queue/replay", json={"route": "hooks", "id": "1-1"}) as r:
        assert r.status == 404
    async with gateway.admin("POST", "/-/queue/replay", json={"route": "nope", "all": True}) as r:
        assert r.status == 404
    async with gateway.admin("POST", "/-/queue/replay", json={"route": "hooks"}) as r:
        assert r.status == 400
    async with gateway.admin("POST", "/-/queue/replay", json={"route": "hooks", "id": queued}) as r:
        assert (r.status, await r.json()) == (200, {"replayed": 1})

    async def delivered() -> bool:
        return (await queue_status(gateway))["delivered"] == 1

    await until(delivered)
    assert [got["headers"]["Idempotency-Key"] for got in receiver.received] == [queued, queued]
    assert (await queue_status(gateway))["dead"] == 0


async def test_5xx_retries_up_to_max_attempts_then_dead(
    store: Store, make_gateway: GatewayFactory, upstream: Upstream
) -> None:
    receiver = Receiver(503, 500, 502, 200)
    upstream.route("/hooks/down", receiver)
    gateway = await make_gateway(config(), store=store)
    await post(gateway, "/hooks/down")

    async def dead() -> bool:
        return (await queue_status(gateway))["dead"] == 1

    await until(dead)
    state = await queue_status(gateway)
    assert state["dead_letters"][0]["attempts"] == 3
    assert state["dead_letters"][0]["status"] == "502"
    assert state["failed_attempts"] == 3
    await asyncio.sleep(0.3)
    assert len(receiver.received) == 3  # max_attempts, not one more
    gaps = [b - a for a, b in zip(receiver.times, receiver.times[1:], strict=False)]
    assert all(gap < 1.0 for gap in gaps)  # backoff within retry.max (200 ms) plus the poll


async def test_retry_after_is_honoured(
    store: Store, make_gateway: GatewayFactory, upstream: Upstream
) -> None:
    receiver = Receiver((429, {"Retry-After": "1"}), (503, {"Retry-After": "1"}), 200)
    upstream.route("/hooks/busy", receiver)
    gateway = await make_gateway(config(), store=store)
    await post(gateway, "/hooks/busy")

    async def delivered() -> bool:
        return (await queue_status(gateway))["delivered"] == 1

    await until(delivered)
    first, second, third = receiver.times
    # Backoff alone would be at most 50 ms and then 100 ms.
    assert second - first >= 1.0
    assert third - second >= 1.0
