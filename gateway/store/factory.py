"""Opening the store a config names."""

from __future__ import annotations

from gateway.config import RedisConfig
from gateway.store.base import Store
from gateway.store.redis import CallObserver


def open_store(config: RedisConfig, observer: CallObserver | None = None) -> Store:
    """`memory://` -> the embedded store; anything else -> one Redis client for this process."""
    if config.url.startswith("memory:"):
        from gateway.store.memory import MemoryStore

        return MemoryStore(config.url, max_bytes=config.memory_max)
    from gateway.store.redis import RedisStore

    return RedisStore(
        config.url, pool_size=config.pool_size, timeout=config.timeout, observer=observer
    )
