"""Opening the store a config names."""

from __future__ import annotations

from collections.abc import Callable

from gateway.config.models import RedisConfig
from gateway.store.base import Store
from gateway.store.breaker import CircuitBreaker
from gateway.store.redis import CallObserver


def open_store(
    config: RedisConfig,
    observer: CallObserver | None = None,
    on_breaker: Callable[[bool], None] | None = None,
) -> Store:
    """`memory://` -> the embedded store; anything else -> one Redis client for this process.

    `observer` sees every store call; `on_breaker(open)` each time the circuit breaker of a
    Redis store opens or closes (the memory store has none).
    """
    if config.url.startswith("memory:"):
        from gateway.store.memory import MemoryStore

        return MemoryStore(config.url, max_bytes=config.memory_max)
    from gateway.store.redis import RedisStore

    return RedisStore(
        config.url,
        pool_size=config.pool_size,
        timeout=config.timeout,
        observer=observer,
        breaker=CircuitBreaker(on_change=on_breaker),
    )
