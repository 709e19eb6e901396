"""A real 3-master Redis Cluster and a real Sentinel group, shared by the tests of this package.

Both start once per test session (lazily: only when a selected test needs them), are flushed
before every test and stopped at the end. `topology` runs a test once on each; the
`redis_url` and `store` fixtures of the root conftest are overridden here, so store and policy
tests written for one Redis run unchanged against both topologies.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import pytest

from gateway.store.redis import RedisStore
from tests.support.redis_cluster import RedisClusterGroup
from tests.support.redis_sentinel import SentinelGroup
from tests.support.redis_server import RedisServer


def _need_redis_cli() -> None:
    if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
        pytest.skip("redis-server and redis-cli are needed for Cluster and Sentinel tests")


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisClusterGroup]:
    """Three cluster-enabled masters, no replicas, every slot assigned."""
    _need_redis_cli()
    group = RedisClusterGroup().start()
    yield group
    group.cleanup()


@pytest.fixture(scope="session")
def sentinel_group() -> Iterator[SentinelGroup]:
    """A master, a replica and three Sentinels (quorum 2) watching `mymaster`."""
    _need_redis_cli()
    group = SentinelGroup().start()
    yield group
    group.cleanup()


@dataclass
class Topology:
    """What a test may do with the topology under it, whichever it is."""

    name: str
    url: str
    cluster: RedisClusterGroup | None = None
    sentinel: SentinelGroup | None = None

    def data_ports(self) -> list[int]:
        """Every redis-server that holds data or cached scripts (masters and replicas)."""
        if self.cluster is not None:
            return self.cluster.ports
        assert self.sentinel is not None
        return [server.port for server in self.sentinel.servers]

    def masters(self) -> list[int]:
        """The servers that take writes now."""
        if self.cluster is not None:
            return self.cluster.ports
        assert self.sentinel is not None
        return [self.sentinel.master().port]

    def master_servers(self) -> list[RedisServer]:
        """The redis-server processes that take writes now."""
        if self.cluster is not None:
            return list(self.cluster.nodes)
        assert self.sentinel is not None
        return [self.sentinel.master()]

    def cli(self, *args: str) -> str:
        """A redis-cli command on the node that serves its key (`-c` follows MOVED)."""
        if self.cluster is not None:
            port = self.cluster.ports[0]
        else:
            assert self.sentinel is not None
            port = self.sentinel.master().port
        return subprocess.run(
            ["redis-cli", "-c", "-p", str(port), *args],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()


def _on_cluster(request: pytest.FixtureRequest) -> Topology:
    cluster: RedisClusterGroup = request.getfixturevalue("redis_cluster")
    cluster.ensure_healthy()  # a resharding test before may still be settling
    cluster.flush()
    return Topology("cluster", cluster.url, cluster=cluster)


def _on_sentinel(request: pytest.FixtureRequest) -> Topology:
    group: SentinelGroup = request.getfixturevalue("sentinel_group")
    group.ensure_healthy()  # a failover test before may have left a server down
    group.flush()
    return Topology("sentinel", group.url, sentinel=group)


@pytest.fixture(
    params=[
        pytest.param("cluster", marks=pytest.mark.cluster),
        pytest.param("sentinel", marks=pytest.mark.sentinel),
    ]
)
def topology(request: pytest.FixtureRequest) -> Topology:
    """The test runs once on the Cluster and once through the Sentinels, on empty data."""
    return _on_cluster(request) if request.param == "cluster" else _on_sentinel(request)


@pytest.fixture
def cluster(request: pytest.FixtureRequest) -> Topology:
    """The Cluster alone, empty (for what only a Cluster does: slots, MOVED, ASK)."""
    return _on_cluster(request)


@pytest.fixture
def sentinel(request: pytest.FixtureRequest) -> Topology:
    """The Sentinel group alone, empty and able to fail over (for failover tests)."""
    return _on_sentinel(request)


@pytest.fixture
def redis_url(topology: Topology) -> str:
    """Overrides the root fixture: tests taking `redis_url` get the topology's URL."""
    return topology.url


@pytest.fixture
async def store(topology: Topology) -> AsyncIterator[RedisStore]:
    """Overrides the root fixture: contract tests run on the topology (no memory store here)."""
    redis = RedisStore(topology.url, timeout=1.0)
    yield redis
    await redis.close()
