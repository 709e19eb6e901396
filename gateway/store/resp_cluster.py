"""Redis Cluster on the request path: one pipelined client per master, commands routed by slot.

The slot map comes from `CLUSTER SLOTS` (asked of any node that answers), fetched on first use
and again whenever the cluster says it changed:
- `MOVED slot host:port`: the slot has a new owner for good. That slot is repointed at once
  (so the retry and every later command go straight there) and the whole map is refreshed in
  the background, since a resharding rarely moves one slot alone.
- `ASK slot host:port`: the slot is being migrated and this key already left. The command is
  retried once on the target, preceded by `ASKING` on the same connection; the map stays.
- `TRYAGAIN`: a multi-key command met a slot half migrated; retried shortly.
- A node that cannot be reached: the call fails (`StoreUnavailable`) and the map is
  refreshed, in case a replica was promoted in its place.

redis-py's Cluster client is not used here: it pays a pool checkout per command, fails at once
when its per-node pool is exhausted, and (8.x) races when first used by concurrent callers.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Sequence
from typing import Any

from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

from gateway.errors import SlotMoving, StoreUnavailable
from gateway.store.resp import Address, Arg, ReplyError, RespClient

log = logging.getLogger("gateway.store")

MAX_REDIRECTS = 5
"""A command follows at most this many MOVED/ASK/TRYAGAIN answers before giving up."""
TRYAGAIN_PAUSE = 0.01
"""Seconds before retrying a command that met a slot in the middle of a migration."""
_KEYLESS = frozenset({"PING"})
_SCRIPTS = frozenset({"EVAL", "EVALSHA"})


def _key(args: Sequence[Arg]) -> bytes | None:
    """The key that decides the slot of a command (None: any node will do).

    PUBLISH is routed by its channel as if it were a key: any node would deliver it
    cluster-wide, but one node per channel keeps one publisher's messages in order.
    """
    command = str(args[0]).upper()
    if command in _SCRIPTS:
        if int(args[2]) == 0:
            return None
        key = args[3]
    elif command in _KEYLESS or len(args) < 2:
        return None
    else:
        key = args[1]
    return key if isinstance(key, bytes) else str(key).encode()


def _target(error: ReplyError) -> tuple[int, Address]:
    """`MOVED 3999 127.0.0.1:6381` -> (3999, ("127.0.0.1", 6381))."""
    _, slot, where = str(error).split(" ", 2)
    host, _, port = where.rpartition(":")
    return int(slot), (host, int(port))


class ClusterClient:
    """Commands to a Redis Cluster, each sent to the master that owns its key's slot."""

    def __init__(
        self,
        seeds: Sequence[Address],
        *,
        timeout: float,
        connections: int = 2,
        username: str | None = None,
        password: str | None = None,
        tls: ssl.SSLContext | None = None,
        connect_timeout: float = 1.0,
    ) -> None:
        self._seeds = list(seeds)
        self.timeout = timeout
        self._options: dict[str, Any] = {
            "timeout": timeout,
            "connections": connections,
            "username": username,
            "password": password,
            "tls": tls,
            "connect_timeout": connect_timeout,
        }
        self._nodes: dict[Address, RespClient] = {}
        self._slots: list[Address | None] | None = None
        self._masters: list[Address] = []
        self._refreshing: asyncio.Future[list[Address | None]] | None = None
        self._background: set[asyncio.Future[Any]] = set()
        self._next = 0

    @property
    def masters(self) -> list[Address]:
        """The masters of the last slot map (the seeds before the first one)."""
        return list(self._masters or self._seeds)

    async def execute(self, *args: Arg) -> Any:
        """Send one command to the master of its key's slot; follow redirections."""
        slots = self._slots or await self._refresh()
        key = _key(args)
        owner = self._any_master() if key is None else slots[key_slot(key)]
        if owner is None:
            self._refresh_soon()
            raise StoreUnavailable(f"no master serves the slot of {key!r}")
        address = owner
        asking = moving = False
        for _ in range(MAX_REDIRECTS):
            node = self._node(address)
            try:
                if asking:
                    _, reply = await node.pipeline([("ASKING",), args])
                    if isinstance(reply, BaseException):
                        raise reply
                    return reply
                return await node.execute(*args)
            except ReplyError as error:
                if error.code == "MOVED":
                    slot, address = _target(error)
                    slots[slot] = address
                    asking = False
                    self._refresh_soon()
                elif error.code == "ASK":
                    _, address = _target(error)
                    asking = True
                elif error.code == "TRYAGAIN":
                    # Keys of one multi-key command on both sides of a migration: the same
                    # node (with ASKING if that is how it was reached) may serve it shortly.
                    moving = True
                    await asyncio.sleep(TRYAGAIN_PAUSE)
                else:
                    raise
            except StoreUnavailable:
                self._refresh_soon()  # a replica may have been promoted in its place
                raise
        raise (SlotMoving if moving else StoreUnavailable)(
            f"redis redirected a command more than {MAX_REDIRECTS} times"
            f" (last to {address[0]}:{address[1]})"
        )

    async def ping(self) -> None:
        """Raise `StoreUnavailable` unless every master answers (every slot can be served)."""
        if self._slots is None:
            await self._refresh()
        await asyncio.gather(*(self._node(a).execute("PING") for a in self.masters))

    def _any_master(self) -> Address:
        masters = self.masters
        self._next = (self._next + 1) % len(masters)
        return masters[self._next]

    def _node(self, address: Address) -> RespClient:
        node = self._nodes.get(address)
        if node is None:
            node = self._nodes[address] = RespClient(address, **self._options)
        return node

    async def _refresh(self) -> list[Address | None]:
        # Concurrent callers share one refresh rather than each asking the cluster, and wait
        # for it no longer than a command may take (it goes on for the callers after them).
        if self._refreshing is None:
            self._refreshing = asyncio.ensure_future(self._load_slots())
            self._refreshing.add_done_callback(self._refreshed)
        try:
            async with asyncio.timeout(self.timeout):
                return await asyncio.shield(self._refreshing)
        except TimeoutError:
            raise StoreUnavailable(f"no cluster slot map within {self.timeout:g}s") from None

    def _refreshed(self, attempt: asyncio.Future[list[Address | None]]) -> None:
        self._refreshing = None
        if not attempt.cancelled() and attempt.exception() is not None:
            log.debug("cluster slot map refresh failed: %s", attempt.exception())

    def _refresh_soon(self) -> None:
        if self._refreshing is not None:
            return
        task = asyncio.ensure_future(self._refresh())
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        task.add_done_callback(lambda t: t.cancelled() or t.exception())  # seen: logged above

    async def _load_slots(self) -> list[Address | None]:
        failures = []
        # Known masters first, then the seeds: any node that answers knows the whole map.
        candidates = list(dict.fromkeys([*self._masters, *self._seeds]))
        started = time.monotonic()
        for address in candidates:
            try:
                reply = await self._node(address).execute("CLUSTER", "SLOTS")
            except (StoreUnavailable, ReplyError) as exc:
                failures.append(f"{address[0]}:{address[1]}: {exc}")
                continue
            log.debug("cluster slot map from %s in %.3fs", address, time.monotonic() - started)
            return self._install(reply, address)
        raise StoreUnavailable("no cluster node gave its slot map: " + "; ".join(failures))

    def _install(self, reply: list[Any], asked: Address) -> list[Address | None]:
        slots: list[Address | None] = [None] * REDIS_CLUSTER_HASH_SLOTS
        masters: dict[Address, None] = {}
        for start, end, master, *_replicas in reply:
            host = master[0].decode() if isinstance(master[0], bytes) else str(master[0])
            # An empty or "?" host means "the address you reached me on".
            address = (host if host not in ("", "?") else asked[0], int(master[1]))
            masters[address] = None
            for slot in range(int(start), int(end) + 1):
                slots[slot] = address
        self._slots = slots
        self._masters = list(masters)
        for address in [a for a in self._nodes if a not in masters and a not in self._seeds]:
            # A node that serves nothing any more (left the cluster): let its connections go.
            stale = self._nodes.pop(address)
            task = asyncio.ensure_future(stale.close())
            self._background.add(task)
            task.add_done_callback(self._background.discard)
        return slots

    async def close(self) -> None:
        for task in list(self._background):
            task.cancel()
        if self._refreshing is not None:
            self._refreshing.cancel()
        nodes, self._nodes = self._nodes, {}
        await asyncio.gather(*(node.close() for node in nodes.values()), return_exceptions=True)
