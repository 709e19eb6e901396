"""From a store URL to the clients the Redis store uses.

- `redis://`, `rediss://`, `unix://`: one server.
- `redis+sentinel://host:port,host:port/service[/db]`: the master the Sentinels name, asked
  again whenever a connection to it fails (a failover moved it).
- `redis+cluster://host:port,host:port`: a Cluster (redis-py's client routes by slot).

Request-path commands go through `RespClient` (pipelined); pub/sub and Cluster use redis-py.
"""

from __future__ import annotations

import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.sentinel import Sentinel
from redis.exceptions import RedisError

from gateway.errors import StoreUnavailable
from gateway.store.resp import Address, RespClient

PIPELINED_CONNECTIONS = 2
"""Connections per process for request-path commands: few, so concurrent commands batch."""


@dataclass
class Clients:
    """The clients behind one store URL."""

    resp: RespClient | None
    """Pipelined client for one server (standalone, or the Sentinel-named master)."""
    cluster: RedisCluster | None
    """redis-py's Cluster client, when the URL names a Cluster."""
    pubsub: Callable[[], aioredis.Redis]
    """Makes a redis-py client for one pub/sub connection."""

    async def close(self) -> None:
        if self.resp is not None:
            await self.resp.close()
        if self.cluster is not None:
            await self.cluster.aclose()


def _hosts(netloc: str, default_port: int) -> list[tuple[str, int]]:
    hosts = []
    for part in netloc.rsplit("@", 1)[-1].split(","):
        host, sep, port = part.strip().rpartition(":")
        if not sep:
            host, port = part.strip(), ""
        hosts.append((host.strip("[]") or "127.0.0.1", int(port or default_port)))
    return hosts


def _credentials(netloc: str) -> dict[str, str]:
    if "@" not in netloc:
        return {}
    user, _, password = netloc.rsplit("@", 1)[0].partition(":")
    out = {}
    if user:
        out["username"] = unquote(user)
    if password:
        out["password"] = unquote(password)
    return out


def _tls(scheme: str, query: str) -> ssl.SSLContext | None:
    if not scheme.startswith("rediss"):
        return None
    context = ssl.create_default_context()
    if parse_qs(query).get("ssl_cert_reqs", [""])[0].lower() == "none":
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def open_clients(url: str, *, pool_size: int, timeout: float) -> Clients:
    """The clients for `url` (nothing connects until first use)."""
    parts = urlsplit(url)
    scheme = parts.scheme
    connect_timeout = max(timeout, 1.0)
    common: dict[str, Any] = {"socket_connect_timeout": connect_timeout, "health_check_interval": 0}
    creds = _credentials(parts.netloc)
    tls = _tls(scheme, parts.query)

    def resp(address: Address | Callable[[], Awaitable[Address]], db: int) -> RespClient:
        return RespClient(
            address,
            timeout=timeout,
            connections=min(pool_size, PIPELINED_CONNECTIONS),
            username=creds.get("username"),
            password=creds.get("password"),
            db=db,
            tls=tls,
            connect_timeout=connect_timeout,
        )

    if scheme in ("redis", "rediss"):
        (address,) = _hosts(parts.netloc, 6379)[:1]
        db = int(parts.path.strip("/") or 0)
        return Clients(resp(address, db), None, lambda: aioredis.Redis.from_url(url, **common))
    if scheme == "unix":
        db = int(parse_qs(parts.query).get("db", ["0"])[0])
        return Clients(
            resp((parts.path, 0), db), None, lambda: aioredis.Redis.from_url(url, **common)
        )
    if scheme in ("redis+sentinel", "rediss+sentinel"):
        path = [p for p in parts.path.split("/") if p]
        if not path:
            raise ValueError("redis+sentinel:// needs the master's service name: /mymaster[/db]")
        service, db = path[0], int(path[1]) if len(path) > 1 else 0
        sentinel = Sentinel(
            _hosts(parts.netloc, 26379),
            sentinel_kwargs={"socket_connect_timeout": connect_timeout},
            ssl=tls is not None,
            **common,
        )

        async def master() -> tuple[str, int]:
            try:
                host, port = await sentinel.discover_master(service)
            except RedisError as exc:
                raise StoreUnavailable(f"no master for {service!r}: {exc}") from exc
            return str(host), int(port)

        return Clients(resp(master, db), None, lambda: sentinel.master_for(service, db=db, **creds))
    if scheme in ("redis+cluster", "rediss+cluster"):
        nodes = [ClusterNode(host, port) for host, port in _hosts(parts.netloc, 6379)]
        cluster = RedisCluster(
            startup_nodes=nodes, max_connections=pool_size, ssl=tls is not None, **creds, **common
        )

        def pubsub_client() -> aioredis.Redis:
            # Classic pub/sub is broadcast to every node of a Cluster, so any node will do.
            known = cluster.get_nodes()
            node = known[0] if known else nodes[0]
            return aioredis.Redis(
                host=node.host, port=node.port, ssl=tls is not None, **creds, **common
            )

        return Clients(None, cluster, pubsub_client)
    raise ValueError(f"unsupported store URL scheme {scheme!r}")
