"""The Redis store: standalone, TLS, Sentinel or Cluster behind one `Store`.

Per process: one pipelined client for request-path commands (`gateway.store.resp`; on a
Cluster one per master, routed by slot: `gateway.store.resp_cluster`), redis-py for pub/sub.
Every call is bounded by `timeout` and guarded by a circuit breaker. Scripts run by EVALSHA;
a NOSCRIPT answer (server restarted, SCRIPT FLUSH) falls back to EVAL, which also caches the
script on that server again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from gateway.errors import StoreUnavailable
from gateway.store.base import (
    MessageHandler,
    Script,
    StatusHandler,
    Store,
    Subscription,
    Value,
)
from gateway.store.breaker import BreakerState, CircuitBreaker
from gateway.store.pubsub import confirmed, relay
from gateway.store.redis_urls import Clients, open_clients
from gateway.store.resp import Arg, ReplyError

log = logging.getLogger("gateway.store")

CallObserver = Callable[[str, float, bool], None]
"""`(operation, seconds, failed)`, called after every store call (metrics)."""


class _RedisSubscription:
    def __init__(self, task: asyncio.Task[None]) -> None:
        self._task = task

    def close(self) -> None:
        self._task.cancel()


class RedisStore(Store):
    """The shared store: every gateway process on every machine sees the same data."""

    shared = True

    def __init__(
        self,
        url: str,
        *,
        pool_size: int = 64,
        timeout: float = 0.25,
        observer: CallObserver | None = None,
        breaker: CircuitBreaker | None = None,
    ) -> None:
        self.url = url
        self.timeout = timeout
        self._clients = open_clients(url, pool_size=pool_size, timeout=timeout)
        self._resp = self._clients.resp
        self._per_key_delete = self._clients.cluster
        self._observer = observer
        self.breaker = breaker or CircuitBreaker()
        self._subscriptions: set[asyncio.Task[None]] = set()

    async def _run(self, op: str, *args: Arg) -> Any:
        """One command, bounded and guarded; the store's only way to Redis."""
        breaker = self.breaker
        if not breaker.allow():
            raise StoreUnavailable(f"store circuit open ({breaker.state.name.lower()})")
        started = time.perf_counter()
        failed = True
        try:
            result = await self._resp.execute(*args)
            failed = False
            return result
        except ReplyError as exc:
            failed = False  # Redis answered: the store is up, the command was refused
            if exc.code == "NOSCRIPT":
                raise  # eval() answers it with EVAL
            # Callers handle one error: a refused command is as unusable as a missing store.
            raise StoreUnavailable(f"redis refused {op}: {exc}") from exc
        finally:
            if failed:
                breaker.failure()
            else:
                breaker.success()
            if self._observer is not None:
                self._observer(op, time.perf_counter() - started, failed)

    async def eval(self, script: Script, keys: Sequence[str], args: Sequence[Value]) -> Any:
        try:
            return await self._run(script.name, "EVALSHA", script.sha, len(keys), *keys, *args)
        except ReplyError:
            pass  # NOSCRIPT (the only reply error `_run` lets through): load it with EVAL
        try:
            return await self._run(script.name, "EVAL", script.lua, len(keys), *keys, *args)
        except ReplyError as exc:  # NOSCRIPT in answer to EVAL: nothing sane to do
            raise StoreUnavailable(f"script {script.name} failed: {exc}") from exc

    async def get(self, key: str) -> bytes | None:
        result: bytes | None = await self._run("get", "GET", key)
        return result

    async def set(
        self, key: str, value: bytes, *, ttl: float | None = None, nx: bool = False
    ) -> bool:
        args: list[Arg] = ["SET", key, value]
        if ttl is not None:
            args += ["PX", max(1, int(ttl * 1000))]
        if nx:
            args.append("NX")
        return await self._run("set", *args) is not None

    async def delete(self, *keys: str) -> int:
        if not keys:
            return 0
        if self._per_key_delete:
            # The keys of one DEL must share a slot on a Cluster: one DEL per key.
            counts = await asyncio.gather(*(self._run("delete", "DEL", key) for key in keys))
            return sum(int(count) for count in counts)
        return int(await self._run("delete", "DEL", *keys))

    async def hmget(self, key: str, fields: Sequence[str]) -> list[bytes | None]:
        result: list[bytes | None] = await self._run("hmget", "HMGET", key, *fields)
        return result

    async def hset(
        self, key: str, mapping: Mapping[str, Value], *, ttl: float | None = None
    ) -> None:
        pairs = [item for name, value in mapping.items() for item in (name, value)]
        await self._run("hset", "HSET", key, *pairs)
        if ttl is not None:
            await self._run("hset", "PEXPIRE", key, max(1, int(ttl * 1000)))

    async def publish(self, channel: str, message: bytes) -> None:
        await self._run("publish", "PUBLISH", channel, message)

    async def subscribe(
        self, channel: str, handler: MessageHandler, *, on_status: StatusHandler | None = None
    ) -> Subscription:
        ready = asyncio.get_running_loop().create_future()
        task = asyncio.create_task(self._listen(channel, handler, ready, on_status))
        self._subscriptions.add(task)
        task.add_done_callback(self._subscriptions.discard)
        try:
            async with asyncio.timeout(max(self.timeout, 1.0)):
                await asyncio.shield(ready)
        except TimeoutError:
            pass  # keeps trying in the background; messages until then are missed
        return _RedisSubscription(task)

    async def _listen(
        self,
        channel: str,
        handler: MessageHandler,
        ready: asyncio.Future[None],
        on_status: StatusHandler | None,
    ) -> None:
        backoff = 0.1
        clients = self._clients
        while True:
            switches = clients.switches
            client = pubsub = None
            subscribed = False
            try:
                client = await clients.pubsub()
                pubsub = client.pubsub()
                await confirmed(pubsub, channel)
                subscribed = True
                if not ready.done():
                    ready.set_result(None)
                if on_status is not None:
                    on_status(True)
                backoff = 0.1
                # Returns when the Sentinels announce a new master: subscribe there.
                await relay(pubsub, handler, stale=_moved(clients, switches))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # whatever broke it (even a redis-py bug): subscribe again
                log.warning("pub/sub on %s lost (%s); resubscribing", channel, type(exc).__name__)
            finally:
                if subscribed and on_status is not None:
                    on_status(False)
                if pubsub is not None:
                    await _quietly(pubsub.aclose())  # type: ignore[no-untyped-call]
                if client is not None:
                    await _quietly(client.aclose())
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 5.0)

    async def ping(self) -> None:
        # Bypasses the breaker: the readiness probe must see a recovered Redis at once, and
        # its success closes the breaker for the requests too.
        try:
            await self._resp.ping()
        except ReplyError as exc:
            raise StoreUnavailable(f"redis ping failed: {exc}") from exc
        if self.breaker.state is not BreakerState.CLOSED:
            self.breaker.success()

    async def close(self) -> None:
        for task in list(self._subscriptions):
            task.cancel()
        await _quietly(self._clients.close())


def _moved(clients: Clients, switches: int) -> Callable[[], bool]:
    return lambda: clients.switches != switches


async def _quietly(awaitable: Awaitable[Any]) -> None:
    try:
        await awaitable
    except Exception:  # closing a broken connection may fail again; nothing to do about it
        log.debug("ignored error while closing", exc_info=True)
