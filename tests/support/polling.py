"""Waiting for Redis processes that reach a state on their own and tell nobody."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


def wait_until(
    check: Callable[[], bool], what: str, *, checks: int = 200, every: float = 0.05
) -> None:
    """Poll `check` at most `checks` times, `every` seconds apart; raise naming `what` if it
    never held. Nodes of a Cluster or a Sentinel group agree asynchronously and announce it to
    no one, so a bounded poll of the condition is the only way to wait for them."""
    for _ in range(checks):
        if check():
            return
        time.sleep(every)
    raise RuntimeError(f"timed out waiting for {what}")


async def eventually(
    check: Callable[[], bool], what: str, *, checks: int = 200, every: float = 0.05
) -> None:
    """`wait_until` for async tests: the event loop keeps running between checks (a client
    under test may have to notice something meanwhile)."""
    for _ in range(checks):
        if check():
            return
        await asyncio.sleep(every)
    raise RuntimeError(f"timed out waiting for {what}")
