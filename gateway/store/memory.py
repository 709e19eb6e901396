"""`memory://`: the embedded store for a single process, no Redis needed.

A product feature, not a test double: the same contract tests run against it and Redis.
Keys expire like Redis keys; the keyspace is an LRU bounded by `memory_max` bytes.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict, defaultdict
from collections.abc import Mapping, Sequence
from itertools import islice
from typing import Any

from gateway.store.base import (
    MessageHandler,
    Script,
    StatusHandler,
    Store,
    Subscription,
    Value,
)

_SWEEP_EVERY = 1.0
_SWEEP_SAMPLE = 200


def _as_bytes(value: Value) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, float):
        return repr(value).encode()
    return str(value).encode()


def _size(value: Any) -> int:
    """A rough byte count: exact for bytes, good enough for the rest (LRU accounting only)."""
    if isinstance(value, bytes | str):
        return len(value) + 48
    if isinstance(value, dict):
        return 64 + sum(len(k) + _size(v) for k, v in value.items())
    if isinstance(value, list | tuple | set):
        return 64 + 16 * len(value)
    return 64


class MemoryKeyspace:
    """Keys with optional expiry, least recently used evicted beyond `max_bytes`."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.used = 0
        # key -> (value, expires_at or None, size)
        self._data: OrderedDict[str, tuple[Any, float | None, int]] = OrderedDict()

    def now(self) -> float:
        return time.time()

    def _live(self, key: str) -> tuple[Any, float | None, int] | None:
        entry = self._data.get(key)
        if entry is None:
            return None
        if entry[1] is not None and entry[1] <= time.time():
            self._drop(key)
            return None
        self._data.move_to_end(key)
        return entry

    def _drop(self, key: str) -> bool:
        entry = self._data.pop(key, None)
        if entry is None:
            return False
        self.used -= entry[2]
        return True

    def get(self, key: str) -> Any:
        entry = self._live(key)
        return None if entry is None else entry[0]

    def set(self, key: str, value: Any, ttl: float | None = None) -> None:
        self._drop(key)
        size = _size(value) + len(key)
        self._data[key] = (value, None if ttl is None else time.time() + ttl, size)
        self.used += size
        while self.used > self.max_bytes and len(self._data) > 1:
            self._drop(next(iter(self._data)))

    def touch(self, key: str) -> None:
        """Re-account a mutable value (a hash) after it changed in place."""
        entry = self._data.get(key)
        if entry is not None:
            self.set(key, entry[0], None if entry[1] is None else entry[1] - time.time())

    def delete(self, key: str) -> bool:
        return self._drop(key)

    def ttl(self, key: str) -> float | None:
        entry = self._live(key)
        if entry is None or entry[1] is None:
            return None
        return entry[1] - time.time()

    def expire(self, key: str, ttl: float) -> bool:
        entry = self._live(key)
        if entry is None:
            return False
        self._data[key] = (entry[0], time.time() + ttl, entry[2])
        return True

    def sweep(self) -> None:
        """Drop expired keys among the least recently used (Redis-like active expiry)."""
        now = time.time()
        oldest = islice(self._data.items(), _SWEEP_SAMPLE)
        expired = [key for key, (_, expires, _) in oldest if expires is not None and expires <= now]
        for key in expired:
            self._drop(key)

    def __len__(self) -> int:
        return len(self._data)


class _LocalSubscription:
    def __init__(self, handlers: list[MessageHandler], handler: MessageHandler) -> None:
        self._handlers = handlers
        self._handler = handler

    def close(self) -> None:
        if self._handler in self._handlers:
            self._handlers.remove(self._handler)


class MemoryStore(Store):
    """The embedded store: one process's keyspace behind the `Store` contract."""

    shared = False

    def __init__(self, url: str = "memory://", max_bytes: int = 64 * 1024 * 1024) -> None:
        self.url = url
        self.keyspace = MemoryKeyspace(max_bytes)
        self._channels: defaultdict[str, list[MessageHandler]] = defaultdict(list)
        self._sweeper: asyncio.Task[None] | None = None

    def _ensure_sweeper(self) -> None:
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep())

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(_SWEEP_EVERY)
            self.keyspace.sweep()

    async def eval(self, script: Script, keys: Sequence[str], args: Sequence[Value]) -> Any:
        self._ensure_sweeper()
        return script.local(self.keyspace, keys, args)

    async def get(self, key: str) -> bytes | None:
        value = self.keyspace.get(key)
        return value if isinstance(value, bytes) else None

    async def set(
        self, key: str, value: bytes, *, ttl: float | None = None, nx: bool = False
    ) -> bool:
        self._ensure_sweeper()
        if nx and self.keyspace.get(key) is not None:
            return False
        self.keyspace.set(key, value, ttl)
        return True

    async def delete(self, *keys: str) -> int:
        return sum(self.keyspace.delete(key) for key in keys)

    async def hmget(self, key: str, fields: Sequence[str]) -> list[bytes | None]:
        value = self.keyspace.get(key)
        if not isinstance(value, dict):
            return [None] * len(fields)
        return [value.get(name) for name in fields]

    async def hset(
        self, key: str, mapping: Mapping[str, Value], *, ttl: float | None = None
    ) -> None:
        self._ensure_sweeper()
        current = self.keyspace.get(key)
        merged = dict(current) if isinstance(current, dict) else {}
        merged.update({name: _as_bytes(value) for name, value in mapping.items()})
        keep = self.keyspace.ttl(key) if ttl is None else ttl
        self.keyspace.set(key, merged, keep)

    async def publish(self, channel: str, message: bytes) -> None:
        loop = asyncio.get_running_loop()
        for handler in list(self._channels.get(channel, ())):
            loop.call_soon(handler, message)

    async def subscribe(
        self, channel: str, handler: MessageHandler, *, on_status: StatusHandler | None = None
    ) -> Subscription:
        handlers = self._channels[channel]
        handlers.append(handler)
        if on_status is not None:
            on_status(True)  # in process: subscribed at once, and never lost
        return _LocalSubscription(handlers, handler)

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
