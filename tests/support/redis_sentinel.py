"""A private Sentinel group on loopback ports: a master, one replica and three Sentinels."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from typing import Any

import redis

from tests.support.polling import wait_until
from tests.support.ports import free_port
from tests.support.redis_server import RedisServer, start_until

SERVICE = "mymaster"
DOWN_AFTER_MS = 1000
"""How long the master must be silent before a Sentinel thinks it is down."""
FAILOVER_TIMEOUT_MS = 3000
"""Also the pause before a Sentinel retries a failed election: short, so tests stay short."""

_FAST_SYNC = ["--repl-diskless-sync-delay", "0"]
"""A replica syncs at once (the default waits 5 s for more replicas to share the transfer)."""


def _replica_of(port: int) -> list[str]:
    return [*_FAST_SYNC, "--replicaof", "127.0.0.1", str(port)]


class SentinelProcess:
    """`redis-server sentinel.conf --sentinel` in the foreground."""

    def __init__(self, master_port: int) -> None:
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="gw-sentinel-")
        self.config = os.path.join(self.dir, "sentinel.conf")
        with open(self.config, "w", encoding="ascii") as handle:
            # Sentinel rewrites this file as it learns: it must be its own, writable.
            handle.write(
                f"port {self.port}\n"
                "bind 127.0.0.1\n"
                f'dir "{self.dir}"\n'
                f"sentinel monitor {SERVICE} 127.0.0.1 {master_port} 2\n"
                f"sentinel down-after-milliseconds {SERVICE} {DOWN_AFTER_MS}\n"
                f"sentinel failover-timeout {SERVICE} {FAILOVER_TIMEOUT_MS}\n"
                f"sentinel parallel-syncs {SERVICE} 1\n"
            )
        self.process: subprocess.Popen[str] | None = None

    def start(self) -> SentinelProcess:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed: run `make test`, which installs it")
        self.process = start_until(
            [binary, self.config, "--sentinel", "--logfile", ""],
            "+monitor master",
            "redis-sentinel",
        )
        return self

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=5, decode_responses=True)

    def cleanup(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        self.process = None
        shutil.rmtree(self.dir, ignore_errors=True)


class SentinelGroup:
    """Two redis-servers (one master, one replica) watched by three Sentinels.

    Which server is the master changes with failovers: ask `master()`. `ensure_healthy()`
    brings a killed server back as a replica and waits until the Sentinels could fail over
    again, so each test starts from a group that can lose its master.
    """

    def __init__(self) -> None:
        self.servers = [RedisServer(extra=_FAST_SYNC), RedisServer()]
        self.sentinels: list[SentinelProcess] = []

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{sentinel.port}" for sentinel in self.sentinels)
        return f"redis+sentinel://{hosts}/{SERVICE}/0"

    def start(self) -> SentinelGroup:
        try:
            first, second = self.servers
            first.start()
            second.extra = _replica_of(first.port)
            second.start()
            wait_until(lambda: self._replicating(second, first.port), "the replica to sync")
            self.sentinels = [SentinelProcess(first.port).start() for _ in range(3)]
            wait_until(self.healthy, "the Sentinels to know each other and the replica", checks=300)
        except BaseException:
            self.cleanup()
            raise
        return self

    def master(self) -> RedisServer:
        """The server the Sentinels name as master now."""
        with self.sentinels[0].client() as client:
            _, port = client.sentinel_get_master_addr_by_name(SERVICE)
        return next(server for server in self.servers if server.port == int(port))

    def replica(self) -> RedisServer:
        master = self.master()
        return next(server for server in self.servers if server is not master)

    @staticmethod
    def _replicating(server: RedisServer, master_port: int) -> bool:
        if server.process is None:
            return False
        with redis.Redis(port=server.port, socket_timeout=5, decode_responses=True) as client:
            info = client.info("replication")
        return (
            info.get("role") == "slave"
            and int(info.get("master_port", 0)) == master_port
            and info.get("master_link_status") == "up"
        )

    def healthy(self) -> bool:
        """All Sentinels agree on a live master, see the replica in sync and each other."""
        try:
            ports = set()
            for sentinel in self.sentinels:
                with sentinel.client() as client:
                    state: dict[str, Any] = client.sentinel_master(SERVICE)
                    if state["flags"] != "master" or state["num-other-sentinels"] < 2:
                        return False
                    replicas = client.sentinel_slaves(SERVICE)
                    if not any(replica["flags"] == "slave" for replica in replicas):
                        return False
                    ports.add(int(state["port"]))
            if len(ports) != 1:
                return False
            (port,) = ports
            others = [server for server in self.servers if server.port != port]
            if not all(self._replicating(server, port) for server in others):
                return False
            # The master streams writes to a fresh replica only once it acknowledged the
            # initial sync ("online"), up to a second later: a flush before that would reach
            # it late, and a failover then would bring old data back.
            with redis.Redis(port=port, socket_timeout=5, decode_responses=True) as client:
                info = client.info("replication")
            states = [info.get(f"slave{n}", {}).get("state") for n in range(len(others))]
            return states == ["online"] * len(others)
        except (redis.RedisError, OSError):
            return False

    def ensure_healthy(self) -> None:
        """Restart a killed server as the current master's replica; wait until healthy."""
        if self.healthy():
            return
        # A failover may still be going on: wait until the Sentinels name a live master.
        wait_until(self._master_alive, "the Sentinels to name a live master", checks=300)
        master = self.master()
        for server in self.servers:
            if server.process is None:
                server.extra = _replica_of(master.port)
                server.start()
        wait_until(self.healthy, "the Sentinel group to be whole again", checks=300)

    def _master_alive(self) -> bool:
        try:
            master = self.master()
            with redis.Redis(port=master.port, socket_timeout=5, decode_responses=True) as client:
                return bool(client.info("replication").get("role") == "master")
        except (redis.RedisError, OSError, StopIteration):
            return False

    def flush(self) -> None:
        """Empty the master and wait until the replica has emptied too."""
        with redis.Redis(port=self.master().port, socket_timeout=10) as client:
            client.flushall()
            if client.wait(1, 5000) < 1:
                raise RuntimeError("the replica did not acknowledge the flush")

    def cleanup(self) -> None:
        for sentinel in self.sentinels:
            sentinel.cleanup()
        for server in self.servers:
            server.cleanup()
