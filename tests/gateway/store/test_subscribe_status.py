"""`subscribe(..., on_status=...)`: subscribers learn when messages may have been lost."""

from __future__ import annotations

import asyncio
import signal
import time

import redis.asyncio as aioredis

from gateway.store import Store
from gateway.store.pubsub import PING_INTERVAL as PUBSUB_PING_INTERVAL
from gateway.store.redis import RedisStore
from tests.support.redis_server import RedisServer


class Recorder:
    """Collects messages and status changes, and lets a test await the next of each."""

    def __init__(self) -> None:
        self.messages: list[bytes] = []
        self.statuses: list[bool] = []
        self.changed = asyncio.Event()

    def message(self, data: bytes) -> None:
        self.messages.append(data)
        self.changed.set()

    def status(self, subscribed: bool) -> None:
        self.statuses.append(subscribed)
        self.changed.set()

    async def until(self, predicate: object, timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout):
            while not predicate():  # type: ignore[operator]
                self.changed.clear()
                await self.changed.wait()


async def test_subscribed_status_is_reported_before_messages_flow(store: Store) -> None:
    seen = Recorder()
    subscription = await store.subscribe("t:status", seen.message, on_status=seen.status)
    try:
        await seen.until(lambda: seen.statuses == [True])
        await store.publish("t:status", b"one")
        await seen.until(lambda: seen.messages == [b"one"])
        assert seen.statuses == [True]
    finally:
        subscription.close()


async def test_subscribe_without_status_handler_still_delivers(store: Store) -> None:
    seen = Recorder()
    subscription = await store.subscribe("t:plain", seen.message)
    try:
        await store.publish("t:plain", b"x")
        await seen.until(lambda: seen.messages == [b"x"])
    finally:
        subscription.close()


async def test_redis_reconnect_reports_loss_then_resubscription(
    redis_store: RedisStore, redis_url: str
) -> None:
    seen = Recorder()
    subscription = await redis_store.subscribe("t:lost", seen.message, on_status=seen.status)
    try:
        await seen.until(lambda: seen.statuses == [True])
        admin = aioredis.Redis.from_url(redis_url)
        try:
            killed = await admin.execute_command(  # type: ignore[no-untyped-call]
                "CLIENT", "KILL", "TYPE", "pubsub"
            )
        finally:
            await admin.aclose()
        assert killed >= 1
        await seen.until(lambda: seen.statuses == [True, False, True])
        await redis_store.publish("t:lost", b"after")
        await seen.until(lambda: seen.messages == [b"after"])
    finally:
        subscription.close()


async def test_a_server_that_stops_answering_is_noticed_without_a_disconnect() -> None:
    # SIGSTOP: the connection stays open and silent, as with a hung host or a lost network.
    server = RedisServer().start()
    store = RedisStore(server.url, timeout=0.25)
    seen = Recorder()
    subscription = await store.subscribe("t:frozen", seen.message, on_status=seen.status)
    try:
        await seen.until(lambda: seen.statuses == [True])
        assert server.process is not None
        server.process.send_signal(signal.SIGSTOP)
        frozen = time.monotonic()
        await seen.until(lambda: seen.statuses == [True, False])
        assert time.monotonic() - frozen < 2 * PUBSUB_PING_INTERVAL + 0.5
        server.process.send_signal(signal.SIGCONT)
        await seen.until(lambda: seen.statuses[-1] is True)
        await store.publish("t:frozen", b"thawed")
        await seen.until(lambda: seen.messages == [b"thawed"])
    finally:
        subscription.close()
        await store.close()
        server.kill()  # works on a stopped process too
        server.cleanup()
