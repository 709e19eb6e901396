"""The master of a service the Sentinels watch: found by asking them all, followed across
failovers.

- `address()` asks every Sentinel at once and takes the answer with the highest configuration
  epoch: during a failover the Sentinels that have not heard of it yet still name the old
  master (and may consider it healthy, when it was demoted on purpose).
- While in use, every Sentinel's `+switch-master` announcement is followed (and any answer
  naming another master than before counts too): when the master moves, `on_switch` callbacks
  run at once (the pipelined client retires its connections,
  subscriptions move). Without this, connections to an old master that is still up (a manual
  `SENTINEL FAILOVER`, a partition that heals) would keep writing to it until the Sentinels
  demote it, seconds later, and those writes would be lost.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any

from redis.asyncio import Redis as AsyncRedis
from redis.asyncio.sentinel import Sentinel

from gateway.errors import StoreUnavailable
from gateway.store.pubsub import confirmed, relay
from gateway.store.resp import Address

log = logging.getLogger("gateway.store")

SWITCH_CHANNEL = "+switch-master"


class SentinelMaster:
    """Where the master of `service` is, according to the Sentinels at `hosts`."""

    def __init__(
        self,
        hosts: Sequence[Address],
        service: str,
        *,
        connect_timeout: float,
        ssl: bool = False,
        **connection: Any,
    ) -> None:
        """`connection`: redis-py connection options for the Sentinels (timeouts, retry)."""
        self.service = service
        self.switches = 0
        """Failovers announced since this object was made (subscriptions compare it)."""
        self._hosts = list(hosts)
        self._connect_timeout = connect_timeout
        self._ssl = ssl
        self._connection = connection
        self._sentinel = Sentinel(  # type: ignore[no-untyped-call]
            self._hosts, sentinel_kwargs=connection, ssl=ssl, **connection
        )
        self._callbacks: list[Callable[[], None]] = []
        self._followers: list[asyncio.Task[None]] = []
        self._current: Address | None = None

    def on_switch(self, callback: Callable[[], None]) -> None:
        """Call `callback()` each time the Sentinels announce a new master."""
        self._callbacks.append(callback)

    async def address(self) -> Address:
        """The master's address now; `StoreUnavailable` if no Sentinel names a usable one."""
        self._follow_switches()
        sentinel = self._sentinel
        asking = [asyncio.ensure_future(s.sentinel_masters()) for s in sentinel.sentinels]
        # An unresponsive Sentinel is not waited for long: the others answer for it.
        done, late = await asyncio.wait(asking, timeout=self._connect_timeout / 2)
        for task in late:
            task.cancel()
        best: dict[str, Any] | None = None
        errors = []
        for task in done:
            if task.exception() is not None:
                errors.append(repr(task.exception()))
                continue
            masters: dict[str, dict[str, Any]] = task.result()  # type: ignore[assignment]
            state = masters.get(self.service)
            if state is None or not sentinel.check_master_state(state, self.service):
                continue
            if best is None or state["config-epoch"] > best["config-epoch"]:
                best = state
        if best is None:
            detail = "; ".join(errors) or f"{len(late)} Sentinel(s) did not answer in time"
            raise StoreUnavailable(f"no Sentinel names a usable master {self.service!r}: {detail}")
        found = str(best["ip"]), int(best["port"])
        self._learn(found)
        return found

    def _follow_switches(self) -> None:
        if not self._followers:
            self._followers = [asyncio.ensure_future(self._follow(*host)) for host in self._hosts]

    async def _follow(self, host: str, port: int) -> None:
        backoff = 0.1
        while True:
            client = AsyncRedis(host=host, port=port, ssl=self._ssl, **self._connection)
            pubsub = client.pubsub()
            try:
                await confirmed(pubsub, SWITCH_CHANNEL)
                backoff = 0.1
                # Announcements made while not subscribed are gone: ask where the master is.
                await _quietly(self.address())
                await relay(pubsub, self._announced)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a Sentinel down is normal: the others are followed too
                log.debug("following Sentinel %s:%s: %s", host, port, exc)
            finally:
                await _quietly(pubsub.aclose())  # type: ignore[no-untyped-call]
                await _quietly(client.aclose())
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 5.0)

    def _announced(self, data: bytes) -> None:
        # "<service> <old ip> <old port> <new ip> <new port>", from each Sentinel in turn.
        name, _, _, ip, port = data.decode(errors="replace").split()
        if name == self.service:
            self._learn((ip, int(port)))

    def _learn(self, master: Address) -> None:
        """Note where the master is; when it moved, tell those who hold connections to it."""
        if master == self._current:
            return
        known, self._current = self._current, master
        if known is None:
            return
        self.switches += 1
        log.warning("Sentinels moved the master of %s to %s:%s", self.service, *master)
        for callback in self._callbacks:
            callback()

    async def close(self) -> None:
        followers, self._followers = self._followers, []
        for task in followers:
            task.cancel()
        if followers:
            # Bounded: closing must not hang on a Sentinel that stopped answering mid-close.
            _, late = await asyncio.wait(followers, timeout=5)
            if late:
                log.warning("%d Sentinel follower(s) did not stop within 5 s", len(late))
        for client in self._sentinel.sentinels:
            await _quietly(client.aclose())


async def _quietly(closing: Any) -> None:
    try:
        await closing
    except Exception:  # closing a broken connection may fail again; nothing to do about it
        log.debug("ignored error while closing", exc_info=True)
