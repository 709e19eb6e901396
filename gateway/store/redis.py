"""The Redis store: standalone, TLS, Sentinel or Cluster behind one `Store`.

One client (one connection pool) per process, every call bounded by `timeout` and guarded by
a circuit breaker. Scripts run by EVALSHA; a NOSCRIPT answer (server restarted, SCRIPT FLUSH)
falls back to EVAL, which also caches the script on that server again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.sentinel import Sentinel
from redis.exceptions import NoScriptError, RedisError

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

log = logging.getLogger("gateway.store")

T = TypeVar("T")
CallObserver = Callable[[str, float, bool], None]
"""`(operation, seconds, failed)`, called after every store call (metrics)."""


def _hosts(netloc: str, default_port: int) -> list[tuple[str, int]]:
    hosts = []
    for part in netloc.rsplit("@", 1)[-1].split(","):
        host, _, port = part.strip().rpartition(":") if ":" in part else (part, "", "")
        hosts.append((host.strip("[]") or "127.0.0.1", int(port or default_port)))
    return hosts


def _credentials(netloc: str) -> dict[str, str]:
    if "@" not in netloc:
        return {}
    userinfo = netloc.rsplit("@", 1)[0]
    user, _, password = userinfo.partition(":")
    out = {}
    if user:
        out["username"] = unquote(user)
    if password:
        out["password"] = unquote(password)
    return out


def connect(url: str, *, pool_size: int, timeout: float) -> tuple[Any, Callable[[], Any]]:
    """A redis-py client for `url`, plus a factory for a standalone client used for pub/sub."""
    parts = urlsplit(url)
    scheme = parts.scheme
    common: dict[str, Any] = {
        "socket_connect_timeout": max(timeout, 1.0),
        "health_check_interval": 0,
    }
    if scheme in ("redis", "rediss", "unix"):
        client = aioredis.Redis.from_url(url, max_connections=pool_size, **common)
        return client, lambda: aioredis.Redis.from_url(url, **common)
    creds = _credentials(parts.netloc)
    if scheme in ("redis+sentinel", "rediss+sentinel"):
        path = [p for p in parts.path.split("/") if p]
        if not path:
            raise ValueError("redis+sentinel:// needs the master's service name: /mymaster[/db]")
        service, db = path[0], int(path[1]) if len(path) > 1 else 0
        sentinel = Sentinel(
            _hosts(parts.netloc, 26379),
            sentinel_kwargs={"socket_connect_timeout": max(timeout, 1.0)},
            ssl=scheme.startswith("rediss"),
            **common,
        )
        master = sentinel.master_for(service, db=db, max_connections=pool_size, **creds)
        return master, lambda: sentinel.master_for(service, db=db, **creds)
    if scheme in ("redis+cluster", "rediss+cluster"):
        nodes = [ClusterNode(host, port) for host, port in _hosts(parts.netloc, 6379)]
        cluster = RedisCluster(
            startup_nodes=nodes,
            max_connections=pool_size,
            ssl=scheme.startswith("rediss"),
            **creds,
            **common,
        )

        def pubsub_client() -> Any:
            # Classic pub/sub is broadcast to every node, so any one node will do.
            node = cluster.get_random_node() if cluster.get_nodes() else nodes[0]
            return aioredis.Redis(host=node.host, port=node.port, **creds, **common)

        return cluster, pubsub_client
    raise ValueError(f"unsupported store URL scheme {scheme!r}")


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
        self._client, self._pubsub_client = connect(url, pool_size=pool_size, timeout=timeout)
        self._observer = observer
        self.breaker = breaker or CircuitBreaker()
        self._subscriptions: set[asyncio.Task[None]] = set()

    async def _call(self, op: str, make: Callable[[], Awaitable[T]]) -> T:
        if not self.breaker.allow():
            raise StoreUnavailable(f"store circuit open ({self.breaker.state.name.lower()})")
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.timeout):
                result = await make()
        except (TimeoutError, RedisError, OSError) as exc:
            self.breaker.failure()
            if self._observer:
                self._observer(op, time.perf_counter() - started, True)
            reason = "timed out" if isinstance(exc, TimeoutError) else type(exc).__name__
            raise StoreUnavailable(f"redis {op} failed: {reason}") from exc
        self.breaker.success()
        if self._observer:
            self._observer(op, time.perf_counter() - started, False)
        return result

    async def eval(self, script: Script, keys: Sequence[str], args: Sequence[Value]) -> Any:
        client = self._client

        async def run() -> Any:
            try:
                return await client.evalsha(script.sha, len(keys), *keys, *args)
            except NoScriptError:
                return await client.eval(script.lua, len(keys), *keys, *args)

        return await self._call(script.name, run)

    async def get(self, key: str) -> bytes | None:
        result: bytes | None = await self._call("get", lambda: self._client.get(key))
        return result

    async def set(
        self, key: str, value: bytes, *, ttl: float | None = None, nx: bool = False
    ) -> bool:
        px = None if ttl is None else max(1, int(ttl * 1000))
        done = await self._call("set", lambda: self._client.set(key, value, px=px, nx=nx))
        return bool(done)

    async def delete(self, *keys: str) -> int:
        if not keys:
            return 0
        if isinstance(self._client, RedisCluster):
            # Keys of one DEL must share a slot on a cluster; delete one by one in a pipeline.
            async def run() -> list[int]:
                pipe = self._client.pipeline(transaction=False)
                for key in keys:
                    pipe.delete(key)
                result: list[int] = await pipe.execute()
                return result

            return sum(await self._call("delete", run))
        return int(await self._call("delete", lambda: self._client.delete(*keys)))

    async def hmget(self, key: str, fields: Sequence[str]) -> list[bytes | None]:
        result: list[bytes | None] = await self._call(
            "hmget", lambda: self._client.hmget(key, list(fields))
        )
        return result

    async def hset(
        self, key: str, mapping: Mapping[str, Value], *, ttl: float | None = None
    ) -> None:
        async def run() -> None:
            pipe = self._client.pipeline(transaction=not isinstance(self._client, RedisCluster))
            pipe.hset(key, mapping=dict(mapping))
            if ttl is not None:
                pipe.pexpire(key, max(1, int(ttl * 1000)))
            await pipe.execute()

        await self._call("hset", run)

    async def publish(self, channel: str, message: bytes) -> None:
        await self._call("publish", lambda: self._client.publish(channel, message))

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
        while True:
            client = self._pubsub_client()
            pubsub = client.pubsub(ignore_subscribe_messages=True)
            subscribed = False
            try:
                await pubsub.subscribe(channel)
                subscribed = True
                if not ready.done():
                    ready.set_result(None)
                if on_status is not None:
                    on_status(True)
                backoff = 0.1
                async for message in pubsub.listen():
                    if message.get("type") == "message":
                        handler(message["data"])
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                log.warning("pub/sub on %s lost (%s); resubscribing", channel, type(exc).__name__)
            finally:
                if subscribed and on_status is not None:
                    on_status(False)
                await _quietly(pubsub.aclose())
                await _quietly(client.aclose())
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 5.0)

    async def ping(self) -> None:
        # Bypasses the breaker: the readiness probe must see a recovered Redis at once, and
        # its success closes the breaker for the requests too.
        try:
            async with asyncio.timeout(self.timeout):
                await self._client.ping()
        except (TimeoutError, RedisError, OSError) as exc:
            raise StoreUnavailable(f"redis ping failed: {type(exc).__name__}") from exc
        if self.breaker.state is not BreakerState.CLOSED:
            self.breaker.success()

    async def close(self) -> None:
        for task in list(self._subscriptions):
            task.cancel()
        await _quietly(self._client.aclose())


async def _quietly(awaitable: Awaitable[Any]) -> None:
    try:
        await awaitable
    except Exception:  # closing a broken connection may fail again; nothing to do about it
        log.debug("ignored error while closing", exc_info=True)
