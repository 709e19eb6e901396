"""The store contract: the few operations policies need, on Redis or in process memory.

A policy never sees a Redis client. It gets a `Store`, runs its atomic steps as `Script`s
(Lua for Redis, a Python twin for the memory store) and uses plain get/set/hash/pub-sub calls.
Every call either answers within `redis.timeout` or raises `StoreUnavailable`.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Protocol

Value = bytes | str | int | float


class Keyspace(Protocol):
    """What a script's Python twin may touch in the memory store (one process, so atomic)."""

    def get(self, key: str) -> Any:
        """The live value of `key` (any Python object), or None."""

    def set(self, key: str, value: Any, ttl: float | None = None) -> None:
        """Store `value`; `ttl` seconds until it expires (None: never)."""

    def delete(self, key: str) -> bool: ...

    def ttl(self, key: str) -> float | None:
        """Seconds left, None when the key has no expiry or does not exist."""

    def expire(self, key: str, ttl: float) -> bool: ...

    def now(self) -> float:
        """The store's clock in seconds (for Redis scripts this is `redis.call('TIME')`)."""


LocalScript = Callable[[Keyspace, Sequence[str], Sequence[Value]], Any]


@dataclass(frozen=True)
class Script:
    """An atomic step: Lua source for Redis plus the same step in Python for the memory store.

    Results must only use types both sides return alike: ints, bytes, lists and None
    (Lua numbers are truncated to integers by Redis, so scale fractions up).
    """

    name: str
    lua: str
    local: LocalScript
    sha: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sha", hashlib.sha1(self.lua.encode()).hexdigest())

    @classmethod
    def load(cls, package: str, filename: str, local: LocalScript) -> Script:
        """Read the Lua file shipped beside a policy module (package data)."""
        lua = resources.files(package).joinpath(filename).read_text(encoding="utf-8")
        return cls(filename.removesuffix(".lua"), lua, local)


class Subscription(Protocol):
    """A live pub/sub subscription; `close()` ends it."""

    def close(self) -> None: ...


MessageHandler = Callable[[bytes], None]
StatusHandler = Callable[[bool], None]
"""`(subscribed)`: True each time a subscription is (re)established, False when it is lost."""


class Store(ABC):
    """State shared by every process of a deployment (Redis) or private to one (memory).

    All methods are coroutines that raise `StoreUnavailable` when the store cannot answer in
    time; callers decide what that means for the request (the policy's `on_store_error`).
    """

    url: str
    shared: bool
    """True when other gateway processes see the same data (Redis), False for `memory://`."""

    @abstractmethod
    async def eval(self, script: Script, keys: Sequence[str], args: Sequence[Value]) -> Any:
        """Run `script` atomically. Every key of one call must share one `{hash tag}`."""

    @abstractmethod
    async def get(self, key: str) -> bytes | None: ...

    @abstractmethod
    async def set(
        self, key: str, value: bytes, *, ttl: float | None = None, nx: bool = False
    ) -> bool:
        """Store `value`; with `nx` only when absent. Returns whether it was stored."""

    @abstractmethod
    async def delete(self, *keys: str) -> int: ...

    @abstractmethod
    async def hmget(self, key: str, fields: Sequence[str]) -> list[bytes | None]: ...

    @abstractmethod
    async def hset(
        self, key: str, mapping: Mapping[str, Value], *, ttl: float | None = None
    ) -> None:
        """Write hash fields (and set the key's expiry when `ttl` is given)."""

    @abstractmethod
    async def publish(self, channel: str, message: bytes) -> None: ...

    @abstractmethod
    async def subscribe(
        self, channel: str, handler: MessageHandler, *, on_status: StatusHandler | None = None
    ) -> Subscription:
        """Call `handler(message)` for each message on `channel` until the subscription closes.

        `on_status(True)` is called each time the subscription is established (the first time
        and after every reconnect), `on_status(False)` when it is lost: messages published in
        between are never delivered, so whoever keeps state derived from them must drop it.
        """

    @abstractmethod
    async def ping(self) -> None:
        """Raise `StoreUnavailable` unless the store answers now."""

    @abstractmethod
    async def close(self) -> None: ...
