"""From a store URL to the clients the Redis store uses.

- `redis://`, `rediss://`, `unix://`: one server.
- `redis+sentinel://host:port,host:port/service[/db]`: the master the Sentinels name, asked
  again whenever a connection to it fails or they announce a failover (`gateway.store.sentinel`).
- `redis+cluster://host:port,host:port`: a Cluster; any of the nodes named tells the rest.

Request-path commands go through the pipelined clients (`RespClient`, and `ClusterClient`
which routes them by slot to one `RespClient` per master); pub/sub uses redis-py.
"""

from __future__ import annotations

import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from redis.asyncio import Redis as AsyncRedis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from gateway.store.resp import Address, RespClient
from gateway.store.resp_cluster import ClusterClient
from gateway.store.sentinel import SentinelMaster

PIPELINED_CONNECTIONS = 2
"""Connections per process for request-path commands: few, so concurrent commands batch."""


@dataclass
class Clients:
    """The clients behind one store URL."""

    resp: RespClient | ClusterClient
    """Pipelined client for request-path commands: one server (standalone, or the master the
    Sentinels name) or a Cluster (routed by slot)."""
    pubsub: Callable[[], Awaitable[AsyncRedis]]
    """Makes a redis-py client for one pub/sub connection (to the master of the moment)."""
    sentinel: SentinelMaster | None = None
    """Where the master is, when the Sentinels say so."""

    @property
    def cluster(self) -> bool:
        """Whether keys of one multi-key command must share a slot."""
        return isinstance(self.resp, ClusterClient)

    @property
    def switches(self) -> int:
        """Failovers announced so far: a subscription made before the last one is stale."""
        return 0 if self.sentinel is None else self.sentinel.switches

    async def close(self) -> None:
        await self.resp.close()
        if self.sentinel is not None:
            await self.sentinel.close()


def _hosts(netloc: str, default_port: int) -> list[tuple[str, int]]:
    hosts = []
    for part in netloc.rsplit("@", 1)[-1].split(","):
        host, sep, port = part.strip().rpartition(":")
        if not sep:
            host, port = part.strip(), ""
        hosts.append((host.strip("[]") or "127.0.0.1", int(port or default_port)))
    return hosts


def _credentials(netloc: str) -> dict[str, Any]:
    if "@" not in netloc:
        return {}
    user, _, password = netloc.rsplit("@", 1)[0].partition(":")
    out: dict[str, Any] = {}
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
    common: dict[str, Any] = {
        "socket_connect_timeout": connect_timeout,
        "health_check_interval": 0,
        # redis-py would retry a lost connection 10 times with growing pauses, on the same
        # address, while the subscriber waits and believes it is subscribed: fail at once
        # instead, the store subscribes again (through the Sentinels, when they are used).
        "retry": Retry(NoBackoff(), 0),
    }
    creds = _credentials(parts.netloc)
    tls = _tls(scheme, parts.query)

    def resp(
        address: Address | Callable[[], Awaitable[Address]], db: int, *, sentinel: bool = False
    ) -> RespClient:
        return RespClient(
            address,
            timeout=timeout,
            connections=min(pool_size, PIPELINED_CONNECTIONS),
            username=creds.get("username"),
            password=creds.get("password"),
            db=db,
            tls=tls,
            connect_timeout=connect_timeout,
            require_master=sentinel,
        )

    def from_url() -> Callable[[], Awaitable[AsyncRedis]]:
        async def make() -> AsyncRedis:
            return AsyncRedis.from_url(url, **common)

        return make

    if scheme in ("redis", "rediss"):
        (address,) = _hosts(parts.netloc, 6379)[:1]
        db = int(parts.path.strip("/") or 0)
        return Clients(resp(address, db), from_url())
    if scheme == "unix":
        db = int(parse_qs(parts.query).get("db", ["0"])[0])
        return Clients(resp((parts.path, 0), db), from_url())
    if scheme in ("redis+sentinel", "rediss+sentinel"):
        path = [p for p in parts.path.split("/") if p]
        if not path:
            raise ValueError("redis+sentinel:// needs the master's service name: /mymaster[/db]")
        service, db = path[0], int(path[1]) if len(path) > 1 else 0
        master = SentinelMaster(
            _hosts(parts.netloc, 26379),
            service,
            connect_timeout=connect_timeout,
            ssl=tls is not None,
            **common,
        )
        client = resp(master.address, db, sentinel=True)
        master.on_switch(client.retire_all)

        async def master_pubsub() -> AsyncRedis:
            host, port = await master.address()
            return AsyncRedis(host=host, port=port, db=db, ssl=tls is not None, **creds, **common)

        return Clients(client, master_pubsub, master)
    if scheme in ("redis+cluster", "rediss+cluster"):
        cluster = ClusterClient(
            _hosts(parts.netloc, 6379),
            timeout=timeout,
            connections=min(pool_size, PIPELINED_CONNECTIONS),
            username=creds.get("username"),
            password=creds.get("password"),
            tls=tls,
            connect_timeout=connect_timeout,
        )
        turn = 0

        async def pubsub_client() -> AsyncRedis:
            # Classic pub/sub is broadcast to every node of a Cluster, so any node will do;
            # each new subscription (after one was lost with its node) tries the next.
            nonlocal turn
            masters = cluster.masters
            host, port = masters[turn % len(masters)]
            turn += 1
            return AsyncRedis(host=host, port=port, ssl=tls is not None, **creds, **common)

        return Clients(cluster, pubsub_client)
    raise ValueError(f"unsupported store URL scheme {scheme!r}")
