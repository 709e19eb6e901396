"""Helpers for the rate-limit tests: look at what a script left in either store."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from gateway.store import Store
from gateway.store.memory import MemoryStore


class Peek:
    """Reads a rate-limit key as stored: a sorted set / list of times, a number, or counters."""

    def __init__(self, store: Store) -> None:
        self.memory = store.keyspace if isinstance(store, MemoryStore) else None
        self.redis: Any = None if self.memory is not None else aioredis.Redis.from_url(store.url)

    async def entries(self, key: str) -> int:
        """How many admissions a sliding-window key holds (0 when absent)."""
        if self.memory is not None:
            return len(self.memory.get(key) or ())
        return int(await self.redis.zcard(key))

    async def number(self, key: str) -> int | None:
        """A token bucket's stored full-again time (None when absent)."""
        if self.memory is not None:
            value = self.memory.get(key)
            return None if value is None else int(value)
        raw = await self.redis.get(key)
        return None if raw is None else int(raw)

    async def exists(self, key: str) -> bool:
        if self.memory is not None:
            return self.memory.get(key) is not None
        return bool(await self.redis.exists(key))

    async def ttl(self, key: str) -> float | None:
        """Seconds until `key` expires (None: absent or without expiry)."""
        if self.memory is not None:
            return self.memory.ttl(key)
        ms = await self.redis.pttl(key)
        return None if ms < 0 else ms / 1000

    async def close(self) -> None:
        if self.redis is not None:
            await self.redis.aclose()


@pytest.fixture
async def peek(store: Store) -> AsyncIterator[Peek]:
    viewer = Peek(store)
    yield viewer
    await viewer.close()
