"""A private 3-master Redis Cluster on loopback ports, started and inspected with redis-cli."""

from __future__ import annotations

import shutil
import socket
import subprocess

from tests.support.polling import wait_until
from tests.support.ports import free_port
from tests.support.redis_server import RedisServer

CLUSTER_BUS_OFFSET = 10000
"""Each node also listens on its port + 10000 for the cluster bus."""


def cli(port: int, *args: str) -> str:
    """`redis-cli -p PORT ARGS...` (raw output, stripped)."""
    return subprocess.run(
        ["redis-cli", "-p", str(port), *args],
        capture_output=True,
        text=True,
        check=True,
        timeout=10,
    ).stdout.strip()


def port_with_free_bus() -> int:
    """A free port whose cluster bus port is free too."""
    while True:
        port = free_port()
        if port + CLUSTER_BUS_OFFSET > 65535:
            continue
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port + CLUSTER_BUS_OFFSET))
            except OSError:
                continue
        return port


class RedisClusterGroup:
    """`masters` cluster-enabled redis-servers joined by `redis-cli --cluster create`, no replicas."""

    def __init__(self, masters: int = 3) -> None:
        self.nodes = [
            RedisServer(
                port_with_free_bus(),
                extra=[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "5000",
                ],
            )
            for _ in range(masters)
        ]

    @property
    def ports(self) -> list[int]:
        return [node.port for node in self.nodes]

    @property
    def url(self) -> str:
        """Two seed nodes, as an operator would write it: the client discovers the third."""
        return "redis+cluster://" + ",".join(f"127.0.0.1:{port}" for port in self.ports[:2])

    def start(self) -> RedisClusterGroup:
        if shutil.which("redis-cli") is None:
            raise RuntimeError("redis-cli is not installed (it comes with redis-server)")
        try:
            for node in self.nodes:
                node.start()
            subprocess.run(
                [
                    "redis-cli",
                    "--cluster",
                    "create",
                    *(f"127.0.0.1:{port}" for port in self.ports),
                    "--cluster-replicas",
                    "0",
                    "--cluster-yes",
                ],
                check=True,
                capture_output=True,
                timeout=60,
            )
            wait_until(self.healthy, "cluster_state:ok on every node")
        except BaseException:
            self.cleanup()
            raise
        return self

    def healthy(self) -> bool:
        """Every node says `cluster_state:ok` and they agree on who owns each slot."""
        try:
            if not all("cluster_state:ok" in cli(port, "CLUSTER", "INFO") for port in self.ports):
                return False
            maps = {self._slot_map(port) for port in self.ports}
        except subprocess.SubprocessError:
            return False
        return len(maps) == 1

    def _slot_map(self, port: int) -> str:
        # `CLUSTER SLOTS` lists ranges with their owner; sorted, it is comparable across nodes.
        return "\n".join(sorted(cli(port, "CLUSTER", "SLOTS").split("\n")))

    def ensure_healthy(self) -> None:
        """Wait until the nodes agree again (after a resharding test, say)."""
        wait_until(self.healthy, "the cluster to agree on its slots")

    def flush(self) -> None:
        for port in self.ports:
            cli(port, "FLUSHALL")

    def node_id(self, port: int) -> str:
        return cli(port, "CLUSTER", "MYID")

    def owner(self, slot: int) -> int:
        """The port of the master serving `slot`."""
        for port in self.ports:
            if self._serves(port, slot):
                return port
        raise LookupError(f"no node serves slot {slot}")

    def _serves(self, port: int, slot: int) -> bool:
        for line in cli(port, "CLUSTER", "NODES").splitlines():
            fields = line.split()
            if "myself" not in fields[2]:
                continue
            for part in fields[8:]:
                if part.startswith("["):
                    continue  # a slot being imported or migrated: not served here yet
                low, _, high = part.partition("-")
                if int(low) <= slot <= int(high or low):
                    return True
        return False

    def keys(self) -> dict[str, int]:
        """Every key in the cluster with the port of the master holding it (small test data)."""
        found = {}
        for port in self.ports:
            for key in cli(port, "--scan").splitlines():
                if key:
                    found[key] = port
        return found

    def key_slot(self, key: str) -> int:
        return int(cli(self.ports[0], "CLUSTER", "KEYSLOT", key))

    def begin_move(self, slot: int, target: int) -> int:
        """Start moving `slot` to the master on port `target` (IMPORTING/MIGRATING, keys stay
        where they are); returns the source port. Clients now get ASK for keys not yet moved."""
        source = self.owner(slot)
        if source == target:
            raise ValueError(f"slot {slot} is already on {target}")
        cli(target, "CLUSTER", "SETSLOT", str(slot), "IMPORTING", self.node_id(source))
        cli(source, "CLUSTER", "SETSLOT", str(slot), "MIGRATING", self.node_id(target))
        return source

    def migrate_keys(self, slot: int, source: int, target: int) -> int:
        """MIGRATE every key of `slot` from `source` to `target`; returns how many moved."""
        moved = 0
        while True:
            keys = cli(source, "CLUSTER", "GETKEYSINSLOT", str(slot), "100").split()
            if not keys:
                return moved
            cli(source, "MIGRATE", "127.0.0.1", str(target), "", "0", "5000", "KEYS", *keys)
            moved += len(keys)

    def finish_move(self, slot: int, target: int) -> None:
        """Give `slot` to `target` on every node (clients now get MOVED), then wait until all
        nodes agree."""
        target_id = self.node_id(target)
        # The target first, as redis-cli --cluster does: it must own the slot before the
        # source stops redirecting with ASK.
        for port in [target, *(p for p in self.ports if p != target)]:
            cli(port, "CLUSTER", "SETSLOT", str(slot), "NODE", target_id)
        wait_until(self.healthy, f"every node to agree that slot {slot} moved")

    def move_slot(self, slot: int, target: int) -> int:
        """Reshard one slot with its keys to `target`, by hand; returns the source port."""
        source = self.begin_move(slot, target)
        self.migrate_keys(slot, source, target)
        self.finish_move(slot, target)
        return source

    def cleanup(self) -> None:
        for node in self.nodes:
            node.cleanup()
