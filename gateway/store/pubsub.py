"""Reading a redis-py pub/sub connection that may go silent without closing."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

PING_INTERVAL = 0.5
"""Seconds a subscription may be silent before it PINGs; as long again without an answer and it
is considered lost."""


async def relay(
    pubsub: Any,
    handler: Callable[[bytes], None],
    *,
    stale: Callable[[], bool] | None = None,
) -> None:
    """Hand each message's data to `handler` until the connection fails or stops answering,
    or `stale()` says the subscription is on the wrong server (then return).

    A server that hangs, or a network that drops packets, does not close the connection:
    an idle subscription sends PING, and one left unanswered for an interval counts as lost
    (raises `TimeoutError`), so that its owner drops what it can no longer keep in sync and
    subscribes again.
    """
    waiting_for_pong = False
    task = asyncio.current_task()
    while stale is None or not stale():
        # A cancellation that lands while redis-py's own read timeout expires can be swallowed
        # on the way out (the task stays "cancelling" and would read on for ever): honour it.
        if task is not None and task.cancelling():
            raise asyncio.CancelledError
        async with asyncio.timeout(2 * PING_INTERVAL):  # should redis-py itself ever stall
            message = await pubsub.get_message(timeout=PING_INTERVAL)
        if message is None:
            if waiting_for_pong:
                raise TimeoutError("no answer to PING on the pub/sub connection")
            await pubsub.ping()
            waiting_for_pong = True
            continue
        waiting_for_pong = False
        if message.get("type") == "message":
            handler(message["data"])


async def confirmed(pubsub: Any, channel: str) -> None:
    """Subscribe to `channel` and wait (at most two ping intervals) for Redis to confirm."""
    await pubsub.subscribe(channel)
    while True:
        message = await pubsub.get_message(timeout=2 * PING_INTERVAL)
        if message is None:
            raise TimeoutError(f"no confirmation of the subscription to {channel}")
        if message.get("type") == "subscribe":
            return
