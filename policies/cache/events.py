"""Cache events between gateway processes: one pub/sub subscription per process and store.

Every change to a stored URI (stored, released unstored, dropped) is published on one
channel. Each process subscribes once, however many cache instances it runs, and dispatches:
waiters of a collapsed miss wake up, near caches drop what changed. A lost subscription
(Redis restarted, network) may have lost messages: near caches are emptied and disabled
until it is back, and waiters re-check the store.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from weakref import WeakKeyDictionary

from gateway.api import Store, StoreUnavailable, Subscription
from policies.cache.store import CHANNEL

log = logging.getLogger("policies.cache")

Listener = Callable[[str | None], None]
"""Told the URI tag that changed elsewhere, or None: "forget everything"."""

_MAX_TRACKED = 50_000
LOST = "x"
"""What waiters get when the subscription (re)connects: re-check, a message may be lost."""


class Events:
    """The per-process hub of one store's cache events."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.origin = os.urandom(6).hex()
        """Names this process in its own messages, so it skips what it already applied."""
        self.subscribed = False
        self._seq = 1
        self._floor = 0
        self._touched: dict[str, int] = {}
        self._waiters: dict[str, set[asyncio.Future[str]]] = {}
        self._listeners: list[Listener] = []
        self._users = 0
        self._subscription: Subscription | None = None
        self._starting: asyncio.Lock | None = None

    async def attach(self, listener: Listener | None) -> None:
        """A cache instance starts using the hub (subscribing on first use)."""
        self._users += 1
        if listener is not None:
            self._listeners.append(listener)
        if self._starting is None:
            self._starting = asyncio.Lock()
        async with self._starting:
            if self._subscription is None:
                try:
                    self._subscription = await self.store.subscribe(
                        CHANNEL, self._on_message, on_status=self._on_status
                    )
                except StoreUnavailable as exc:
                    log.warning("cache events unavailable: %s", exc)

    def detach(self, listener: Listener | None) -> None:
        """A cache instance stopped; the last one out closes the subscription."""
        self._users -= 1
        if listener is not None and listener in self._listeners:
            self._listeners.remove(listener)
        if self._users <= 0 and self._subscription is not None:
            self._subscription.close()
            self._subscription = None
            self.subscribed = False

    def mark(self) -> int:
        """A point in the event order; see `unchanged_since`."""
        return self._seq

    def unchanged_since(self, tag: str, mark: int) -> bool:
        """No event about `tag` (nor a reconnect) arrived after `mark` was taken."""
        # Every event increments the sequence first: a mark equal to it was taken after.
        return self.subscribed and mark >= self._floor and self._touched.get(tag, 0) <= mark

    def touch(self, tag: str) -> None:
        """Record a local change at once (its own message arrives later)."""
        self._seq += 1
        if len(self._touched) >= _MAX_TRACKED:
            self._touched.clear()
            self._floor = self._seq
        self._touched[tag] = self._seq

    def waiter(self, tag: str) -> asyncio.Future[str]:
        """A future resolved with the kind of the next event about `tag`."""
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(tag, set()).add(future)
        return future

    def forget(self, tag: str, future: asyncio.Future[str]) -> None:
        waiting = self._waiters.get(tag)
        if waiting is not None:
            waiting.discard(future)
            if not waiting:
                del self._waiters[tag]

    def _wake(self, tag: str, kind: str) -> None:
        for future in self._waiters.pop(tag, ()):
            if not future.done():
                future.set_result(kind)

    def _on_message(self, data: bytes) -> None:
        try:
            kind, origin, *tags = data.decode("ascii").split(" ")
        except (UnicodeDecodeError, ValueError):
            return
        mine = origin == self.origin
        for tag in tags:
            if not mine:
                self.touch(tag)
                for listener in self._listeners:
                    listener(tag)
            self._wake(tag, kind)

    def _on_status(self, subscribed: bool) -> None:
        self._seq += 1
        self._floor = self._seq
        self._touched.clear()
        self.subscribed = subscribed
        for listener in self._listeners:
            listener(None)
        for tag in list(self._waiters):
            self._wake(tag, LOST)


_HUBS: WeakKeyDictionary[Store, Events] = WeakKeyDictionary()
# One hub per store object, i.e. per process: every cache instance (each route, each config
# generation during a reload) shares its subscription instead of opening its own.


def events_for(store: Store) -> Events:
    """The hub of `store` in this process."""
    hub = _HUBS.get(store)
    if hub is None:
        hub = _HUBS[store] = Events(store)
    return hub
