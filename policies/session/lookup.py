"""Reading a session from the store: the `read.lua` step, its memory twin, and its arguments.

One script call reads the fields and slides the expiry together, so a session costs one round
trip; nothing is cached in the gateway, so a deleted session is refused on the very next
request. Requests of one session that arrive in the same turn of the event loop (a page's
burst of API calls) share that call: their reads would leave in the same write to Redis
anyway, so they see exactly what each would have seen alone.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence
from functools import cache
from typing import Any

from gateway.api import Keyspace, Script, Store, StoreUnavailable, Value


def _read_local(keyspace: Keyspace, keys: Sequence[str], args: Sequence[Value]) -> Any:
    """The memory store's `read.lua`: same arguments, same answer."""
    key = keys[0]
    session = keyspace.get(key)
    if not isinstance(session, dict) or not session:
        return None
    names = args[2:]
    values: list[bytes | None]
    if names:
        values = [session.get(str(name)) for name in names]
    else:
        values = []
        for name, value in session.items():
            values += [name.encode(), value]
    sliding = int(args[0])
    if sliding > 0:
        left = keyspace.ttl(key)
        if left is not None and left * 1000 < int(args[1]):
            keyspace.expire(key, sliding / 1000)
    return values


@cache
def read_script() -> Script:
    """`read.lua` with its twin, loaded once per process."""
    return Script.load(__package__ or "policies.session", "read.lua", local=_read_local)


class Reader:
    """What one policy instance reads: its script arguments, built once."""

    __slots__ = ("args", "names", "script")

    def __init__(self, names: Sequence[str] | None, sliding: float, refresh: float) -> None:
        self.script = read_script()
        self.names = tuple(names) if names is not None else None
        sliding_ms = round(sliding * 1000)
        threshold_ms = max(0, sliding_ms - round(refresh * 1000))
        self.args: list[Value] = [sliding_ms, threshold_ms, *(self.names or ())]

    def decode(self, reply: Any) -> dict[str, str] | None:
        """The script's reply as `{field: value}`; None when there is no such session."""
        if reply is None:
            return None
        if self.names is not None:
            return {
                name: value.decode("utf-8", "surrogateescape")
                for name, value in zip(self.names, reply, strict=True)
                if value is not None
            }
        return {
            name.decode("utf-8", "surrogateescape"): value.decode("utf-8", "surrogateescape")
            for name, value in zip(reply[::2], reply[1::2], strict=True)
        }


class Reads:
    """Session reads through one store, shared by the requests of one loop turn."""

    __slots__ = ("_loop", "_reader", "_store", "_turn")

    def __init__(self, store: Store, reader: Reader) -> None:
        self._store = store
        self._reader = reader
        self._turn: dict[str, list[asyncio.Future[dict[str, str] | None]]] = {}
        """Keys read in this loop turn -> the requests waiting on that read."""
        self._loop: asyncio.AbstractEventLoop | None = None

    def read(self, key: str) -> Awaitable[dict[str, str] | None]:
        """The session stored at `key` (each caller gets its own dict), or None when there is
        no such session; `StoreUnavailable` when the store cannot answer."""
        waiters = self._turn.get(key)
        loop = self._loop
        if loop is None:
            # Cached: before Python 3.12, get_running_loop() costs a getpid() system call.
            loop = self._loop = asyncio.get_running_loop()
        if waiters is not None:
            joined: asyncio.Future[dict[str, str] | None] = loop.create_future()
            waiters.append(joined)
            return joined
        if not self._turn:
            loop.call_soon(self._turn.clear)  # the next turn's reads go to the store again
        waiters = self._turn[key] = []
        return self._lead(key, waiters)

    async def _lead(
        self, key: str, waiters: list[asyncio.Future[dict[str, str] | None]]
    ) -> dict[str, str] | None:
        reader = self._reader
        try:
            session = reader.decode(await self._store.eval(reader.script, (key,), reader.args))
        except BaseException as exc:
            self._done(key, waiters)
            failure = StoreUnavailable(str(exc) or type(exc).__name__)
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_exception(failure)
            raise
        self._done(key, waiters)
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None if session is None else dict(session))
        return session

    def _done(self, key: str, waiters: list[asyncio.Future[dict[str, str] | None]]) -> None:
        # A store that answers within the turn (memory://) must not leave this read open to
        # joiners that nobody would wake: later requests of the turn read again.
        if self._turn.get(key) is waiters:
            del self._turn[key]
