"""How many gateway processes share the store: the default `local_share` of the local limiter.

Every process whose config has a `rate_limit` with `on_store_error: local` and no
`local_share` beats every `EVERY` seconds: `heartbeat.lua` records it with the store's time
in one sorted set, drops processes silent for `STALE_AFTER` beats, and returns how many are
left. The last count is what the process divides its limits by while the store is down.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import socket
from collections.abc import Sequence
from functools import cache

from gateway.api import Keyspace, Script, Store, StoreUnavailable, Value

log = logging.getLogger("policies.ratelimit")

EVERY = 2.0
"""Seconds between two beats of one process."""
STALE_AFTER = 3
"""Beats a process may miss before it no longer counts (a scale-down shows after 6s)."""


def processes_key() -> str:
    """The one key every gateway on the store beats into (versioned, its own hash tag)."""
    return "gw:v1:{processes}"


def process_id(store: Store) -> str:
    """This process's member: host, pid and the store client (one per process; in-process
    gateways of a test each have their own, and count apart)."""
    return f"{socket.gethostname()}:{os.getpid()}:{id(store):x}"


@cache
def heartbeat_script() -> Script:
    """The beat-and-count script, read from package data once per process."""
    return Script.load(__package__, "heartbeat.lua", local=beat_local)


def beat_local(keyspace: Keyspace, keys: Sequence[str], args: Sequence[Value]) -> int:
    """The memory store's twin of `heartbeat.lua`."""
    now = int(keyspace.now() * 1_000_000)
    member, age = str(args[0]), int(args[1])
    beats: dict[str, int] = keyspace.get(keys[0]) or {}
    beats[member] = now
    for gone in [name for name, at in beats.items() if at <= now - age]:
        del beats[gone]
    keyspace.set(keys[0], beats, math.ceil(age / 1000) / 1000)
    return len(beats)


class Heartbeat:
    """Beats for one policy instance and remembers the last count (at least 1)."""

    def __init__(self, store: Store) -> None:
        self.seen = 1
        self._store = store
        self._keys = [processes_key()]
        self._args = [process_id(store), round(EVERY * STALE_AFTER * 1_000_000)]
        self._script = heartbeat_script()

    async def beat(self) -> int:
        """One beat: register, count, remember the count."""
        count = int(await self._store.eval(self._script, self._keys, self._args))
        self.seen = max(1, count)
        return self.seen

    async def run(self) -> None:
        """Beat until cancelled; a failed beat keeps the last count and is retried."""
        while True:
            try:
                await self.beat()
            except StoreUnavailable as exc:  # the outage the count is kept for
                log.debug("rate_limit heartbeat: %s; keeping %d processes", exc, self.seen)
            except Exception:  # a bug must not end the beats of a long-lived process
                log.warning(
                    "rate_limit heartbeat failed; keeping %d processes", self.seen, exc_info=True
                )
            await asyncio.sleep(EVERY)
